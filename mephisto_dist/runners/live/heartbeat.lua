-- A page's heartbeat: remember when it was last heard, on the Redis server's clock.
-- KEYS[1]  L:heartbeats (ZSET agent id -> ms)
-- ARGV[1]  agent id
-- Returns the server time in ms.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
return now_ms
