-- An entry for a hosted runner's agent (a page's message, a status change, a shutdown), once per update id.
-- KEYS[1]  L:agent:<id>:seen  (SET of update ids already pushed)
-- KEYS[2]  L:agent:<id>:inbox (LIST of JSON entries, the runner BLPOPs it)
-- ARGV[1]  update id ('' for entries that are never repeats: statuses, shutdown)
-- ARGV[2]  entry (JSON)
-- ARGV[3]  TTL of both keys, seconds
-- Returns 1 when pushed, 0 for a repeat.
if ARGV[1] ~= '' then
  if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
    return 0
  end
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
