-- The clock of the Redis node that holds a shard: the scripts' clock, which stream ids and due times use.
-- A script and not a bare TIME: on a Redis Cluster a keyless command goes to any node, and cannot be
-- pipelined at all; a script is routed by its key to the node whose clock the other scripts read.
--
-- KEYS[1] any key of the shard (its stream)
-- Returns TIME: {seconds, microseconds}.
return redis.call('TIME')
