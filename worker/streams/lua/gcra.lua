-- Reserve delivery start slots at a global rate (GCRA, no burst allowance).
-- Mirrors worker.streams.pace.reserve(); both are tested against each other.
--
-- KEYS[1] pace      string: theoretical arrival time (TAT), µs on the Redis clock
-- ARGV[1] interval  µs between two starts (1e6 / rate)
-- ARGV[2] want      slots wanted (<= batch size)
-- ARGV[3] horizon   µs: reserve only if the first slot starts within this time
-- Returns {granted, offset of the first slot from now in µs}. Slots are
-- offset, offset + interval, ... Granted 0 means "ask again after offset - horizon".
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
local offset = start - now
if offset > horizon or want < 1 then
  return {0, offset}
end
local new_tat = start + want * interval
-- The key only matters while its TAT is in the future.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
return {want, offset}
