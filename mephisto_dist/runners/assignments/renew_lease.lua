-- Renewal of an assignment's runner lease (runners.assignments.lease), only while the key is still the
-- renewing runner's own, or missing (Redis lost it: flushed, restarted; nobody took the assignment over,
-- since the sweep claims the key before it ends or restarts one). A key holding anything else (a lapsed
-- lease the sweep claimed, another runner's) is never written.
-- KEYS[1]  L:assignment:<id>:runner
-- ARGV[1]  the runner's value (running:<token>)
-- ARGV[2]  the lease, in ms
-- Returns 1 when renewed, 2 when set again (it was missing), 0 when the key holds something else.
local held = redis.call('GET', KEYS[1])
if held == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
if held ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
