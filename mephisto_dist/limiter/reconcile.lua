-- reconcile.lua: make a pool exactly the given holders, all with fresh leases.
--
-- KEYS[1]     pool: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- ARGV[1]     lease in ms, or 'never'
-- ARGV[2..n]  holders (the database's recount)
-- Returns the number of holders now in the pool.
--
-- Used by the beat job that recounts from unit statuses, so a pool lost to a Redis restart or
-- FLUSHALL is rebuilt. Holders are added one call each: unpacking thousands of them into one ZADD
-- would overflow the Lua stack.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local pool = KEYS[1]
local expiry = '+inf'
if ARGV[1] ~= 'never' then
  expiry = now + tonumber(ARGV[1])
end

redis.call('DEL', pool)
for i = 2, #ARGV do
  redis.call('ZADD', pool, expiry, ARGV[i])
end
if #ARGV > 1 and ARGV[1] ~= 'never' then
  redis.call('PEXPIREAT', pool, math.ceil(expiry))
end
return redis.call('ZCARD', pool)
