-- Add a batch of callbacks to the stream, with their "queued" status updates, in one call.
-- One command instead of MULTI + N XADD + EXEC: the client packs and parses one reply.
-- Scripts run atomically, so readers see all of the batch or none of it.
--
-- KEYS[1] stream    callback stream
-- KEYS[2] status    status update stream
-- ARGV[1]           the status entry for the batch (a JSON array of updates), or "" for none
-- ARGV[2..]         entries, each: n  f1 v1 ... fn vn   (n field/value pairs)
-- Returns the number of entries added.
local i, added = 2, 0
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + 2 * n))
  added = added + 1
  i = i + 1 + 2 * n
end
if ARGV[1] ~= '' then redis.call('XADD', KEYS[2], '*', 'u', ARGV[1]) end
return added
