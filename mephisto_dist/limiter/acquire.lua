-- acquire.lua: take a token for one holder in every listed pool, or in none of them.
--
-- KEYS[3i-2]  pool i: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- KEYS[3i-1]  pool i: STRING cap override (absent: ARGV[3i] applies)
-- KEYS[3i]    pool i: STRING ready marker (see rebuild.lua)
-- ARGV[1]     holder
-- ARGV[2]     '1': exclusive (a holder already in a pool is refused there), '0': it passes
-- ARGV[3i]    pool i: the caller's cap (0 = unlimited)
-- ARGV[3i+1]  pool i: lease in ms, or 'never'
-- ARGV[3i+2]  pool i: '1' if the pool is rebuilt from the database (refuse while its marker is gone)
-- Returns 0 when the holder now holds a token in every pool; i when pool i is full; -i when pool i
-- is lost and must be rebuilt first; n + i (n pools) when exclusive and pool i already has the holder.
-- Nothing is written unless 0 is returned, except that a pool rebuilt from the database in which a
-- lease ran out loses its ready marker (its expired tokens' units may still count: it is recounted).
--
-- Expired members are pruned before counting. A holder already in a pool passes that pool's check
-- (it is not counted twice) and gets a fresh lease, unless exclusive. The pool's TTL follows its
-- latest lease, so an abandoned pool disappears.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local holder = ARGV[1]
local exclusive = ARGV[2] == '1'
local n = #KEYS / 3

for i = 1, n do
  local pool = KEYS[3 * i - 2]
  if ARGV[3 * i + 2] == '1' then
    if redis.call('EXISTS', KEYS[3 * i]) == 0 then
      return -i
    end
    -- A lease that ran out in a pool kept from the database is not a slot given back: its unit may
    -- still count (beat, which renews them, was down). The pool is lost until recounted.
    if redis.call('ZCOUNT', pool, '-inf', now) > 0 then
      redis.call('DEL', KEYS[3 * i])
      return -i
    end
  else
    redis.call('ZREMRANGEBYSCORE', pool, '-inf', now)
  end
  local cap = tonumber(redis.call('GET', KEYS[3 * i - 1]) or ARGV[3 * i])
  local member = redis.call('ZSCORE', pool, holder)
  if member and exclusive then
    return n + i
  end
  if cap > 0 and not member and redis.call('ZCARD', pool) >= cap then
    return i
  end
end

for i = 1, n do
  local pool = KEYS[3 * i - 2]
  local lease = ARGV[3 * i + 1]
  if lease == 'never' then
    redis.call('ZADD', pool, '+inf', holder)
    redis.call('PERSIST', pool)
  else
    redis.call('ZADD', pool, now + tonumber(lease), holder)
    local latest = redis.call('ZRANGE', pool, -1, -1, 'WITHSCORES')[2]
    if latest ~= 'inf' then
      redis.call('PEXPIREAT', pool, math.ceil(tonumber(latest)))
      if ARGV[3 * i + 2] == '1' then
        -- The marker lives no longer than the pool: a pool gone with its last lease is lost, not empty.
        redis.call('PEXPIREAT', KEYS[3 * i], math.ceil(tonumber(latest)))
      end
    end
  end
end
return 0
