-- acquire.lua: take a token for one holder in every listed pool, or in none of them.
--
-- KEYS[2i-1]  pool i: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- KEYS[2i]    pool i: STRING cap override (absent: ARGV[2i] applies)
-- ARGV[1]     holder
-- ARGV[2i]    pool i: the caller's cap (0 = unlimited)
-- ARGV[2i+1]  pool i: lease in ms, or 'never'
-- Returns 0 when the holder now holds a token in every pool, else the 1-based index i of the first
-- full pool (and nothing was written).
--
-- Expired members are pruned before counting. A holder already in a pool passes that pool's check
-- (it is not counted twice) and gets a fresh lease. The pool's TTL follows its latest lease, so an
-- abandoned pool disappears.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local holder = ARGV[1]
local n = #KEYS / 2

for i = 1, n do
  local pool = KEYS[2 * i - 1]
  redis.call('ZREMRANGEBYSCORE', pool, '-inf', now)
  local cap = tonumber(redis.call('GET', KEYS[2 * i]) or ARGV[2 * i])
  if cap > 0 and not redis.call('ZSCORE', pool, holder) and redis.call('ZCARD', pool) >= cap then
    return i
  end
end

for i = 1, n do
  local pool = KEYS[2 * i - 1]
  local lease = ARGV[2 * i + 1]
  if lease == 'never' then
    redis.call('ZADD', pool, '+inf', holder)
    redis.call('PERSIST', pool)
  else
    redis.call('ZADD', pool, now + tonumber(lease), holder)
    local latest = redis.call('ZRANGE', pool, -1, -1, 'WITHSCORES')[2]
    if latest ~= 'inf' then
      redis.call('PEXPIREAT', pool, math.ceil(tonumber(latest)))
    end
  end
end
return 0
