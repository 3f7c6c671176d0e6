-- release.lua: give back one holder's tokens.
--
-- KEYS[i]  pool i: ZSET holder -> lease expiry (server-clock ms; +inf = never expires)
-- ARGV[1]  holder
-- Returns how many tokens the holder still held (an expired lease is not counted).
--
-- Removing members never needs a later expiry, so the pools' TTLs are left alone. Other holders' lapsed
-- leases are not pruned here: in a pool rebuilt from the database only a recount may free them.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local returned = 0
for i = 1, #KEYS do
  local expiry = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if expiry and redis.call('ZREM', KEYS[i], ARGV[1]) == 1 and tonumber(expiry) > now then
    returned = returned + 1
  end
end
return returned
