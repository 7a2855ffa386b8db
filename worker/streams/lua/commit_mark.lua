-- Move the committed mark of shard 0's status stream forward, never back (CALLBACK_AFTER_COMMIT).
-- Every entry of that stream at or below the mark is in the database, so a callback waiting for its
-- image task's final update (entry field "after") may be delivered once the mark is at or past it.
--
-- KEYS[1] committed  string: the mark, a stream id "<ms>-<seq>"
-- KEYS[2] status     shard 0's status stream (same hash tag as KEYS[1])
-- ARGV[1] group      the status writers' consumer group
-- ARGV[2] id         the newest entry the caller has just committed and acked
-- Why the mark is safe: a group delivers entries in stream order and the writers ack only after
-- their commit, so every entry below the oldest one still pending is committed. An entry at or
-- below ARGV[2] may still be pending (left by a predecessor and not re-applied yet, or delivered by
-- a read that failed and not claimed yet): the mark then stops just below it. A new writer commits
-- older claimed entries after newer ones were marked: the mark never moves back.
-- Returns the mark after the call (false when there is none yet).
local MAX_SEQ = '18446744073709551615'

local function parts(id)  -- "<ms>-<seq>" as two digit strings, or nil
  if type(id) ~= 'string' then return nil end
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms, seq
end
-- Digit strings without leading zeros compare exactly by length, then text (a seq may pass 2^53).
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function before(xm, xs, ym, ys)  -- id x < id y
  if xm ~= ym then return less(xm, ym) end
  return less(xs, ys)
end
local function minus_one(digits)  -- a positive integer's digits, less one
  local i = #digits
  while string.sub(digits, i, i) == '0' do i = i - 1 end
  local out = string.sub(digits, 1, i - 1) .. tostring(tonumber(string.sub(digits, i, i)) - 1)
    .. string.rep('9', #digits - i)
  return (string.gsub(out, '^0+(%d)', '%1'))
end

local ms, seq = parts(ARGV[2])
if not ms then return redis.error_reply('commit_mark.lua: not a stream id: ' .. tostring(ARGV[2])) end
local pending = redis.call('XPENDING', KEYS[2], ARGV[1])
local pm, ps = parts(pending[2])
if tonumber(pending[1]) > 0 and pm and not before(ms, seq, pm, ps) then
  if ps ~= '0' then
    ms, seq = pm, minus_one(ps)
  elseif pm ~= '0' then
    ms, seq = minus_one(pm), MAX_SEQ
  else
    return redis.call('GET', KEYS[1])  -- nothing lies below the very first id
  end
end
local current = redis.call('GET', KEYS[1])
local cm, cs = parts(current)
if cm and not before(cm, cs, ms, seq) then return current end
local mark = ms .. '-' .. seq
redis.call('SET', KEYS[1], mark)
return mark
