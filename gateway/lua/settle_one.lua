-- Settlement of one metered cost against the cache: KEYS[b+1..b+4] = the group's cached account,
-- the key's month-to-date spend ('' if it has no limit), the key's last-used marker, the group's
-- top-up marker. Returns a bit set: 1 = last_used_at is due; 2 = this debit took the balance under
-- the group's auto top-up threshold (once per 60 s per group, whoever crossed it first).
local function settle(b, cost)
  local flags = 0
  if redis.call('EXISTS', KEYS[b + 1]) == 1 then
    local bal = redis.call('HINCRBY', KEYS[b + 1], 'bal', 0 - cost)
    local thr = tonumber(redis.call('HGET', KEYS[b + 1], 'thr') or '-1')
    if thr >= 0 and bal < thr and bal + cost >= thr then
      if redis.call('SET', KEYS[b + 4], '1', 'NX', 'EX', 60) then flags = flags + 2 end
    end
  end
  if KEYS[b + 2] ~= '' and redis.call('EXISTS', KEYS[b + 2]) == 1 then
    redis.call('INCRBY', KEYS[b + 2], cost)
  end
  if redis.call('SET', KEYS[b + 3], '1', 'NX', 'EX', 60) then flags = flags + 1 end
  return flags
end
