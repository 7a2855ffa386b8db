-- The leader lease: one holder per queue, identified by a random token, with a fencing epoch.
--
-- KEYS[1] lease     string: holder token, PX = TTL
-- KEYS[2] info      hash: holder, token, epoch, acquired_ms, renewed_ms (for operators)
-- KEYS[3] epoch     string: +1 on every new acquisition
-- ARGV[1] op        "acquire" | "renew" | "release"
-- ARGV[2] token
-- ARGV[3] ttl_ms    (acquire, renew)
-- ARGV[4] holder    (acquire) a human-readable description: host, pid
-- Returns {1, epoch} when the caller holds the lease after the call (release: {1, epoch}
-- when it did release), else {0, epoch, remaining ttl ms of the current holder}.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, token = ARGV[1], ARGV[2]
local current = redis.call('GET', KEYS[1])
local epoch = tonumber(redis.call('GET', KEYS[3]) or '0')
if op == 'acquire' then
  if not current then
    redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
    epoch = redis.call('INCR', KEYS[3])
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[2], 'holder', ARGV[4], 'epoch', epoch, 'acquired_ms', now_ms, 'renewed_ms', now_ms)
    return {1, epoch}
  end
  if current == token then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    redis.call('HSET', KEYS[2], 'renewed_ms', now_ms)
    return {1, epoch}
  end
  return {0, epoch, redis.call('PTTL', KEYS[1])}
elseif op == 'renew' then
  if current == token then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    redis.call('HSET', KEYS[2], 'renewed_ms', now_ms)
    return {1, epoch}
  end
  return {0, epoch, redis.call('PTTL', KEYS[1])}
elseif op == 'release' then
  if current == token then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'released_ms', now_ms)
    return {1, epoch}
  end
  return {0, epoch, redis.call('PTTL', KEYS[1])}
end
return redis.error_reply('lease.lua: unknown op ' .. tostring(op))
