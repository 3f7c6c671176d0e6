-- reconcile.lua: make a pool the given holders, all with fresh leases.
--
-- KEYS[1]     pool: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- ARGV[1]     lease in ms, or 'never'
-- ARGV[2]     'all', or k: how many holders the caller saw in the pool before it read the database
-- ARGV[3..]   with k: those k holders, then the database's recount; with 'all': the recount only
-- Returns the number of holders now in the pool.
--
-- Used by the beat job (and a launcher that finds tokens missing) to recount from unit statuses, so a
-- pool lost to a Redis restart or FLUSHALL is rebuilt. With 'all' the pool becomes exactly the recount.
-- With the holders seen, only those of them the recount dropped are removed: a holder that acquired
-- after the caller looked (a launch racing the recount) keeps its token, or the cap would be exceeded.
-- And a holder the caller saw is only renewed, never added back: one missing now gave its token back
-- after the caller looked (its unit moved on after the recount's snapshot), and adding it would hold a
-- slot nobody counts. Only a holder missing when the caller looked (a pool lost to a flush, a lease run
-- out) is added.
-- Holders are added one call each: unpacking thousands of them into one ZADD would overflow the Lua stack.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local pool = KEYS[1]
local expiry = '+inf'
if ARGV[1] ~= 'never' then
  expiry = now + tonumber(ARGV[1])
end

local first = 3
local looked = {}
if ARGV[2] == 'all' then
  redis.call('DEL', pool)
else
  local seen = tonumber(ARGV[2])
  first = 3 + seen
  local wanted = {}
  for i = first, #ARGV do
    wanted[ARGV[i]] = true
  end
  for i = 3, first - 1 do
    looked[ARGV[i]] = true
    if not wanted[ARGV[i]] then
      redis.call('ZREM', pool, ARGV[i])
    end
  end
end
for i = first, #ARGV do
  if looked[ARGV[i]] then
    redis.call('ZADD', pool, 'XX', expiry, ARGV[i])
  else
    redis.call('ZADD', pool, expiry, ARGV[i])
  end
end
if #ARGV >= first and ARGV[1] ~= 'never' then
  local ttl = redis.call('PTTL', pool)
  if ttl < 0 or now + ttl < expiry then
    redis.call('PEXPIREAT', pool, math.ceil(expiry))
  end
end
return redis.call('ZCARD', pool)
