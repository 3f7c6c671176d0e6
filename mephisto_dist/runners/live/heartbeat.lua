-- Pages' heartbeats: remember when each was last heard, on the Redis server's clock.
-- KEYS[1]  L:heartbeats (ZSET agent id -> ms)
-- ARGV     agent ids (one or more)
-- Returns the server time in ms.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV, 500 do
  local args = {}
  for j = i, math.min(i + 499, #ARGV) do
    args[#args + 1] = now_ms
    args[#args + 1] = ARGV[j]
  end
  redis.call('ZADD', KEYS[1], unpack(args))
end
return now_ms
