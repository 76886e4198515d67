-- One call admits a batch of requests and first settles the costs metered since the last call
-- (settle() of settle_one.lua): ARGV = [rate-limit TTL, S, S costs]; KEYS = 4 per settlement,
-- then 3 per admission (the group's cached account, the key's spend or '', the rate-limit
-- counter). Returns S settlement bit sets, then one {balance, purchased, spend, requests in this
-- window} per admission.
local s = tonumber(ARGV[2])
local out = {}
for i = 1, s do out[i] = settle((i - 1) * 4, tonumber(ARGV[2 + i])) end
local base = s * 4
for j = 1, (#KEYS - base) / 3 do
  local b = base + (j - 1) * 3
  local acct = redis.call('HMGET', KEYS[b + 1], 'bal', 'paid')
  local spend = false
  if KEYS[b + 2] ~= '' then spend = redis.call('GET', KEYS[b + 2]) end
  local n = redis.call('INCR', KEYS[b + 3])
  if n == 1 then redis.call('EXPIRE', KEYS[b + 3], ARGV[1]) end
  out[s + j] = {acct[1], acct[2], spend, n}
end
return out
