-- Fill a group's cached account from PostgreSQL (KEYS = the account, `portal:unsettled`), less
-- what the stream still owes PostgreSQL (ARGV = balance, purchased, TTL, threshold, unsettled
-- field).
if redis.call('EXISTS', KEYS[1]) == 0 then
  local owed = tonumber(redis.call('HGET', KEYS[2], ARGV[5]) or '0')
  local bal = string.format('%d', tonumber(ARGV[1]) - owed)
  redis.call('HSET', KEYS[1], 'bal', bal, 'paid', ARGV[2], 'thr', ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'bal', 'paid')
