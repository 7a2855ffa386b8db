-- Fenced XAUTOCLAIM: only the current leader (token and epoch both current) may take over entries.
-- A deposed leader that has not noticed yet would otherwise steal entries from its successor.
--
-- KEYS[1] stream    callback stream
-- KEYS[2] lease     leader lease (holder token)
-- KEYS[3] epoch     fencing epoch
-- ARGV[1] group     ARGV[2] consumer   ARGV[3] min idle ms   ARGV[4] cursor   ARGV[5] count
-- ARGV[6] token     ARGV[7] epoch the caller acquired the lease under
-- Returns XAUTOCLAIM's reply {next cursor, {{id, {field, value, ...}}, ...}, {deleted ids}},
-- or the error "FENCED ..." when the caller is no longer the leader.
if redis.call('GET', KEYS[2]) ~= ARGV[6] or redis.call('GET', KEYS[3]) ~= ARGV[7] then
  return redis.error_reply('FENCED: the lease belongs to another leader now')
end
return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
