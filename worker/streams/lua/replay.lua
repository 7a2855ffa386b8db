-- Send dead letters back to the stream as fresh callbacks (ops replay).
--
-- KEYS[1] dead      dead-letter stream
-- KEYS[2] stream    callback stream
-- ARGV[1..]         dead-letter ids
-- Each goes back with att=0 and tq=now (ms, Redis clock), without reason/status/error/dead_ms.
-- An id already gone is skipped, so replays running at once never enqueue a letter twice.
-- Returns how many moved.
local t = redis.call('TIME')
local now_ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local drop, moved = {att = true, tq = true, reason = true, status = true, error = true, dead_ms = true}, 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if found[1] then
    local src, out = found[1][2], {'att', '0', 'tq', now_ms}
    for j = 1, #src, 2 do
      if not drop[src[j]] then out[#out + 1] = src[j]; out[#out + 1] = src[j + 1] end
    end
    redis.call('XADD', KEYS[2], '*', unpack(out))
    moved = moved + redis.call('XDEL', KEYS[1], id)
  end
end
return moved
