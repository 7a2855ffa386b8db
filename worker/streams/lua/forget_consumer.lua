-- Delete a consumer from its group only while it has nothing pending
-- (XGROUP DELCONSUMER discards the consumer's pending entries).
--
-- KEYS[1] stream    the stream the group reads (callback or status stream)
-- ARGV[1] group     ARGV[2] consumer
-- Returns 1 when the consumer was deleted, 0 when it holds entries.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) + 1
