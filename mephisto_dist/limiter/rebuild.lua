-- rebuild.lua: rebuild a lost pool from the database's recount, once.
--
-- KEYS[1]     pool: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- KEYS[2]     the pool's ready marker: STRING '1' while the pool is intact
-- ARGV[1]     lease in ms, or 'never'
-- ARGV[2..n]  holders (the database's recount)
-- Returns the number of holders now in the pool, or -1 when the marker was there (the pool is intact,
-- or another process rebuilt it first: its recount stands and nothing is written).
--
-- While the marker is missing acquire.lua refuses the pool, so nothing can be taken between the
-- caller's recount and this write. Holders are added one call each: unpacking thousands of them into
-- one ZADD would overflow the Lua stack.

if redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
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
redis.call('SET', KEYS[2], '1')
if #ARGV > 1 and ARGV[1] ~= 'never' then
  redis.call('PEXPIREAT', pool, math.ceil(expiry))
  redis.call('PEXPIREAT', KEYS[2], math.ceil(expiry))  -- gone with the pool's last lease: lost, not empty
end
return redis.call('ZCARD', pool)
