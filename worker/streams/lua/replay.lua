-- Send dead letters back to the stream as the next generation of their callbacks (ops replay).
--
-- KEYS[1] dead      dead-letter stream
-- KEYS[2] stream    callback stream
-- KEYS[3] status    status update stream (for the database writer)
-- ARGV[1..]         records, one per dead letter: id  n  f1 v1 ... fn vn  update
--                   id: the dead letter; f/v: the stream entry to add in its place (built by
--                   queue.replay: att=0, tq=now, gen+1, the dead-letter record kept in hist);
--                   update: one status update as JSON ("" for none), recorded only if it moved.
-- A letter already gone is skipped (XDEL says so), so replays running at once never enqueue a
-- letter twice. The status updates of the letters moved go in one status entry, atomically
-- with the move. Returns how many moved.
local moved, updates, i = 0, {}, 1
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  local first, last = i + 2, i + 1 + 2 * n
  if redis.call('XDEL', KEYS[1], id) == 1 then
    redis.call('XADD', KEYS[2], '*', unpack(ARGV, first, last))
    moved = moved + 1
    if ARGV[last + 1] ~= '' then updates[#updates + 1] = ARGV[last + 1] end
  end
  i = last + 2
end
if #updates > 0 then redis.call('XADD', KEYS[3], '*', 'u', '[' .. table.concat(updates, ',') .. ']') end
return moved
