-- rate.lua: take one token from a token bucket, refilled continuously on the server clock.
--
-- KEYS[1]  bucket: HASH tokens (float), ts (server-clock ms of the last refill)
-- ARGV[1]  refill rate, tokens per second (> 0)
-- ARGV[2]  burst: the most tokens the bucket holds (>= 1); a missing bucket starts full
-- Returns '0' when a token was taken, else the seconds to wait before one is available (as a
-- string: Redis would truncate a Lua number to an integer). Nothing is taken when refusing.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local bucket = KEYS[1]
local rate_per_ms = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])

local state = redis.call('HMGET', bucket, 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
-- A server clock stepping back must not mint or destroy tokens.
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate_per_ms)
  ts = now
end

local wait_s = 0
-- The epsilon absorbs float error after waiting exactly the advertised time.
if tokens >= 1 - 1e-9 then
  tokens = math.max(0, tokens - 1)
else
  wait_s = (1 - tokens) / rate_per_ms / 1000
end
redis.call('HSET', bucket, 'tokens', tokens, 'ts', ts)
redis.call('PEXPIRE', bucket, math.ceil(burst / rate_per_ms) + 1000)
return tostring(wait_s)
