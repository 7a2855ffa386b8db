-- A fenced lease (the leader's, the status writer's): one holder, identified by a random token.
-- Taking a free lease is SET PX after GET found it empty, atomic in this script: the same
-- mutual exclusion as SET NX PX, so a holder that takes the key with SET NX PX (an earlier
-- version's status writer, a redis-py lock) and this script never both hold it.
--
-- KEYS[1] lease     string: holder token, PX = TTL
-- KEYS[2] info      hash: holder, epoch, acquired_ms, renewed_ms, released_ms (for operators)
-- KEYS[3] epoch     string: +1 on every new acquisition (the fencing epoch)
-- ARGV[1] op        "acquire" | "renew" | "release"
-- ARGV[2] token
-- ARGV[3] ttl_ms    (acquire, renew)
-- ARGV[4] holder    (acquire) a human-readable name: host:pid:token prefix
-- Returns {1, epoch} when the caller holds the lease after the call (release: {1, epoch}
-- when it did release), else {0, epoch, remaining ttl ms of the current holder}.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, token = ARGV[1], ARGV[2]
local current = redis.call('GET', KEYS[1])
local epoch = tonumber(redis.call('GET', KEYS[3]) or '0')
local function extend()  -- ours already: keep it for another TTL
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('HSET', KEYS[2], 'renewed_ms', now_ms)
  return {1, epoch}
end
local function refused() return {0, epoch, redis.call('PTTL', KEYS[1])} end
if op == 'acquire' then
  if not current then
    redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
    epoch = redis.call('INCR', KEYS[3])
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[2], 'holder', ARGV[4], 'epoch', epoch, 'acquired_ms', now_ms, 'renewed_ms', now_ms)
    return {1, epoch}
  end
  if current == token then return extend() end
  return refused()
elseif op == 'renew' then
  if current == token then return extend() end
  return refused()
elseif op == 'release' then
  if current == token then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'released_ms', now_ms)
    return {1, epoch}
  end
  return refused()
end
return redis.error_reply('lease.lua: unknown op ' .. tostring(op))
