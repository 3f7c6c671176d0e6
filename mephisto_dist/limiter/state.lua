-- state.lua: a pool's stored cap override and how many live tokens it holds, in one round trip.
--
-- KEYS[1]  the pool: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- KEYS[2]  the pool's cap override: STRING (absent: none)
-- Returns {cap override or -1, live token count}. Reads only: expired members are counted out, not
-- removed (the writing scripts prune).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local cap = redis.call('GET', KEYS[2])
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
if cap then
  return {tonumber(cap), live}
end
return {-1, live}
