-- Settle a batch of callbacks the leader has finished with, atomically.
--
-- KEYS[1] stream    callback stream (entries are XACKed and XDELed here)
-- KEYS[2] delayed   zset of retries/deferrals, score = due time in ms (Redis clock)
-- KEYS[3] dead      dead-letter stream
-- KEYS[4] stats     hash of counters for operators
-- KEYS[5] status    status update stream (for the database writer)
-- ARGV[1]           consumer group
-- ARGV[2..]         records, each starting with a kind and a stream id:
--   "ack"   id                                  delivered: remove from the stream
--   "delay" id  delay_ms  member  counter       move to the delayed set (counter: "retried"|"deferred")
--   "dead"  id  n  f1 v1 ... fn vn              append to the dead-letter stream
--   "again" id  n  f1 v1 ... fn vn              re-add at the stream's tail (hand back unstarted work)
--   "aside" id  n  f1 v1 ... fn vn              a malformed entry: to the dead-letter stream, counted "malformed"
--   "status" json                               append one status entry (a JSON array of updates)
-- An entry no longer pending (settled first by another consumer) is only deleted:
-- no retry, dead letter or hand-back copy is written for it, so nothing is duplicated.
-- Returns the number of ids that were still pending (XACK's answer).
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local group = ARGV[1]
local owned = 0
local counts = {}
local function bump(name) counts[name] = (counts[name] or 0) + 1 end
-- Removes the entry; true when it was still pending, i.e. nobody settled it first. Only then
-- may a copy be written (retry, dead letter, hand-back): a second settler writing one too
-- would duplicate the callback.
local function settle(id)
  local acked = redis.call('XACK', KEYS[1], group, id)
  redis.call('XDEL', KEYS[1], id)
  owned = owned + acked
  return acked == 1
end
local function fields_at(i)
  local n = tonumber(ARGV[i])
  local out = {}
  for j = 1, 2 * n do out[j] = ARGV[i + j] end
  return out, i + 1 + 2 * n
end
local i = 2
while i <= #ARGV do
  local kind, id = ARGV[i], ARGV[i + 1]
  if kind == 'status' then
    redis.call('XADD', KEYS[5], '*', 'u', id); i = i + 2
  elseif kind == 'ack' then
    if settle(id) then bump('delivered') end
    i = i + 2
  elseif kind == 'delay' then
    if settle(id) then
      redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[i + 2]), ARGV[i + 3])
      bump(ARGV[i + 4])
    end
    i = i + 5
  elseif kind == 'dead' or kind == 'again' or kind == 'aside' then
    local fields, nexti = fields_at(i + 2)
    if settle(id) then
      local target = KEYS[3]
      if kind == 'again' then target = KEYS[1] end
      redis.call('XADD', target, '*', unpack(fields))
      bump(({dead = 'dead', again = 'handed_back', aside = 'malformed'})[kind])
    end
    i = nexti
  else
    return redis.error_reply('settle.lua: unknown record kind ' .. tostring(kind))
  end
end
for name, n in pairs(counts) do redis.call('HINCRBY', KEYS[4], name, n) end
if counts['delivered'] then redis.call('HSET', KEYS[4], 'last_delivered_ms', now_ms) end
return owned
