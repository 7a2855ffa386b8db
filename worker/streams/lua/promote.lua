-- Move due entries of the delayed set back to the stream, atomically (no loss, no double move).
--
-- KEYS[1] delayed   zset, score = due time in ms (Redis clock)
-- KEYS[2] stream    callback stream
-- ARGV[1]           at most this many entries per call
-- Members are JSON objects of stream fields; "tq" (enqueue time) is set to now.
-- Returns {moved, seconds until the next due entry or -1 when the set is empty}.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local entry = cjson.decode(member)
  entry['tq'] = tostring(now_ms)
  local fields = {}
  for k, v in pairs(entry) do
    fields[#fields + 1] = k
    fields[#fields + 1] = v
  end
  redis.call('XADD', KEYS[2], '*', unpack(fields))
  redis.call('ZREM', KEYS[1], member)
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if head[2] then wait = math.max(0, tonumber(head[2]) - now_ms) / 1000 end
return {#due, tostring(wait)}
