-- swap.lua: give back one holder's tokens and take a token for another, in one step, so that no
-- third holder can take the slot in between (a freed slot handed straight to its replacement).
--
-- KEYS[3i-2]  pool i: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- KEYS[3i-1]  pool i: STRING cap override (absent: ARGV[3i] applies)
-- KEYS[3i]    pool i: STRING ready marker (see rebuild.lua)
-- ARGV[1]     the holder giving its tokens back
-- ARGV[2]     the holder taking a token
-- ARGV[3i]    pool i: the caller's cap (0 = unlimited)
-- ARGV[3i+1]  pool i: lease in ms, or 'never'
-- ARGV[3i+2]  pool i: '1' if the pool is rebuilt from the database (refuse while its marker is gone)
-- Returns 0 when the new holder now holds a token in every pool; i when pool i is full (the old
-- holder's tokens are given back all the same); -i when pool i is lost and must be rebuilt first
-- (nothing is written then, except that a pool found with a lapsed lease loses its marker).
--
-- The acquire half is acquire.lua's, run after the release half.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local old = ARGV[1]
local holder = ARGV[2]
local n = #KEYS / 3

for i = 1, n do
  if ARGV[3 * i + 2] == '1' then
    if redis.call('EXISTS', KEYS[3 * i]) == 0 then
      return -i
    end
    if redis.call('ZCOUNT', KEYS[3 * i - 2], '-inf', now) > 0 then
      redis.call('DEL', KEYS[3 * i])  -- a lapsed lease: recount the pool (see acquire.lua)
      return -i
    end
  end
end

for i = 1, n do
  local pool = KEYS[3 * i - 2]
  if ARGV[3 * i + 2] ~= '1' then
    redis.call('ZREMRANGEBYSCORE', pool, '-inf', now)
  end
  redis.call('ZREM', pool, old)
end

for i = 1, n do
  local pool = KEYS[3 * i - 2]
  local cap = tonumber(redis.call('GET', KEYS[3 * i - 1]) or ARGV[3 * i])
  if cap > 0 and not redis.call('ZSCORE', pool, holder) and redis.call('ZCARD', pool) >= cap then
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
        redis.call('PEXPIREAT', KEYS[3 * i], math.ceil(tonumber(latest)))
      end
    end
  end
end
return 0
