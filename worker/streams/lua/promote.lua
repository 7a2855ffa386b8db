-- Move due entries of the delayed set back to the stream, atomically (no loss, no double move).
--
-- KEYS[1] delayed   zset, score = due time in ms (Redis clock)
-- KEYS[2] stream    callback stream
-- KEYS[3] dead      dead-letter stream: where a member that is not a JSON object of strings goes
-- KEYS[4] stats     hash of counters for operators ("malformed" counts the members set aside)
-- ARGV[1]           at most this many entries per call
-- Members are JSON objects of stream fields; "tq" (enqueue time) is set to now. A member that
-- cannot be decoded is set aside in the dead-letter stream (capped, with the reason) instead of
-- failing the whole call, so one bad member never blocks the retries behind it.
-- Returns {moved or set aside, seconds until the next due entry or -1 when the set is empty}.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
local moved, bad = 0, 0
local function as_fields(member)
  local ok, entry = pcall(cjson.decode, member)
  if not ok or type(entry) ~= 'table' then return nil end
  local fields = {}
  for k, v in pairs(entry) do
    if type(k) ~= 'string' or (type(v) ~= 'string' and type(v) ~= 'number') then return nil end
    if k ~= 'tq' then
      fields[#fields + 1] = k
      fields[#fields + 1] = tostring(v)
    end
  end
  if #fields == 0 then return nil end
  fields[#fields + 1] = 'tq'
  fields[#fields + 1] = tostring(now_ms)
  return fields
end
for _, member in ipairs(due) do
  local fields = as_fields(member)
  if fields then
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    redis.call('ZREM', KEYS[1], member)
    moved = moved + 1
  elseif KEYS[3] then
    redis.call('XADD', KEYS[3], '*', 'raw.member', string.sub(member, 1, 1024),
      'reason', 'malformed: a delayed member is not a JSON object of strings',
      'status', '', 'error', '', 'dead_ms', tostring(now_ms))
    if KEYS[4] then redis.call('HINCRBY', KEYS[4], 'malformed', 1) end
    redis.call('ZREM', KEYS[1], member)
    bad = bad + 1
  end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if head[2] then wait = math.max(0, tonumber(head[2]) - now_ms) / 1000 end
return {moved + bad, tostring(wait)}
