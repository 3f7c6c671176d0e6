-- release.lua: give back tokens, each a holder's in one pool (one holder in several pools, or several
-- holders in several pools, in one step).
--
-- KEYS[i]  pool i: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- ARGV[i]  the holder whose token in pool i is given back
-- Returns, per pool, 1 when its holder still held the token (an expired lease is not counted), else 0.
--
-- Removing members never needs a later expiry, so the pools' TTLs are left alone. Other holders' lapsed
-- leases are not pruned here: in a pool rebuilt from the database only a recount may free them.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local returned = {}
for i = 1, #KEYS do
  local expiry = redis.call('ZSCORE', KEYS[i], ARGV[i])
  returned[i] = 0
  if expiry and redis.call('ZREM', KEYS[i], ARGV[i]) == 1 and tonumber(expiry) > now then
    returned[i] = 1
  end
end
return returned
