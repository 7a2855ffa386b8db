-- Compare-and-set the run-time configuration: store new values only if nobody changed them since the caller read.
--
-- KEYS[1] config    string: {"version": n, "values": {name: value, ...}} (JSON); absent: version 0
-- ARGV[1]           the version the caller read
-- ARGV[2]           the new values (a JSON object of environment strings)
-- Returns the new version, or -1 when someone else changed it first.
local raw = redis.call('GET', KEYS[1])
local version = 0
if raw then version = cjson.decode(raw)['version'] end
if tonumber(ARGV[1]) ~= version then return -1 end
redis.call('SET', KEYS[1], '{"version":' .. (version + 1) .. ',"values":' .. ARGV[2] .. '}')
return version + 1
