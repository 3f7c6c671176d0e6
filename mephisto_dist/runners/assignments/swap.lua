-- Compare-and-set of an assignment's runner lease (runners.assignments.lease): a restart claim taken
-- over by the restarted runner, or given up by the sweep.
-- KEYS[1]  L:assignment:<id>:runner
-- ARGV[1]  the value the key must hold now (the claim)
-- ARGV[2]  the new value; empty: delete the key
-- ARGV[3]  the new value's time to live, in ms
-- Returns 1 when swapped, 0 when the key held something else.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
