-- Take the pages silent for longer than a limit: return their agent ids and forget them, in one step,
-- so two sweeps never handle the same silence twice.
-- KEYS[1]  L:heartbeats (ZSET agent id -> ms of the last heartbeat)
-- ARGV[1]  silence limit in ms
-- ARGV[2]  most members to take
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now_ms - tonumber(ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'LIMIT', 0, tonumber(ARGV[2]))
if #stale > 0 then
  redis.call('ZREM', KEYS[1], unpack(stale))
end
return stale
