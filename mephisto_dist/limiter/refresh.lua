-- refresh.lua: the reconciler's write: renew the holders that still count, remove the proven gone.
--
-- KEYS[1]     pool: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- KEYS[2]     the pool's ready marker (see rebuild.lua): its TTL follows the pool's
-- ARGV[1]     lease in ms, or 'never'
-- ARGV[2]     k: how many holders to keep follow
-- ARGV[3..k+2]  holders to keep: renewed if they still hold a token, never added (a token the pool
--               lost may have gone to someone else since)
-- ARGV[k+3..n]  holders proven gone (their unit is done): removed
-- Returns the number of live holders afterwards. A holder in neither list, such as one that took its
-- token after the caller's snapshot, is left alone.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local pool = KEYS[1]
local expiry = '+inf'
if ARGV[1] ~= 'never' then
  expiry = now + tonumber(ARGV[1])
end
local k = tonumber(ARGV[2])

-- Renewed before the lapsed leases are pruned: a holder that still counts keeps its token even if its
-- lease ran out (beat was down), and only the lapsed tokens the recount does not name are freed.
for i = 3, k + 2 do
  redis.call('ZADD', pool, 'XX', expiry, ARGV[i])
end
for i = k + 3, #ARGV do
  redis.call('ZREM', pool, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', pool, '-inf', now)
local latest = redis.call('ZRANGE', pool, -1, -1, 'WITHSCORES')[2]
if latest == 'inf' then
  redis.call('PERSIST', pool)
  redis.call('PERSIST', KEYS[2])
elseif latest then
  redis.call('PEXPIREAT', pool, math.ceil(tonumber(latest)))
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('PEXPIREAT', KEYS[2], math.ceil(tonumber(latest)))
  end
end
return redis.call('ZCARD', pool)
