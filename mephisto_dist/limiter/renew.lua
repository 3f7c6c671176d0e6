-- renew.lua: give a fresh lease to the listed holders that still hold a token.
--
-- KEYS[1]     pool: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- ARGV[1]     lease in ms, or 'never'
-- ARGV[2..n]  holders
-- Returns how many holders were renewed. A holder whose lease already ran out is not brought back:
-- its slot may have gone to someone else.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local pool = KEYS[1]
local expiry = '+inf'
if ARGV[1] ~= 'never' then
  expiry = now + tonumber(ARGV[1])
end

redis.call('ZREMRANGEBYSCORE', pool, '-inf', now)
local renewed = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', pool, ARGV[i]) then
    redis.call('ZADD', pool, 'XX', expiry, ARGV[i])
    renewed = renewed + 1
  end
end

if renewed > 0 then
  local latest = redis.call('ZRANGE', pool, -1, -1, 'WITHSCORES')[2]
  if latest == 'inf' then
    redis.call('PERSIST', pool)
  else
    redis.call('PEXPIREAT', pool, math.ceil(tonumber(latest)))
  end
end
return renewed
