-- release.lua: give back one holder's tokens.
--
-- KEYS[i]  pool i: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- ARGV[1]  holder
-- Returns how many tokens the holder still held (an expired lease is not counted).
--
-- Removing members never needs a later expiry, so the pools' TTLs are left alone.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local returned = 0
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  returned = returned + redis.call('ZREM', KEYS[i], ARGV[1])
end
return returned
