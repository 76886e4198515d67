-- One call admits a batch of requests and first settles the costs metered since the last call
-- (settle() of settle_one.lua).
-- ARGV = [S, the purchase thresholds of tiers 1..5, S costs, then 14 per admission: for each of
-- its two rate windows, the counter's TTL and the window's limit at tiers 0..5].
-- KEYS = 4 per settlement, then 4 per admission: the group's cached account, the key's spend or
-- '', the group's counters of the two windows of the request's API family ('' for none).
-- The group's tier comes from its cached purchases: a request at either window's limit is
-- refused and counted in neither (a refusal never uses up the other window). With the account
-- not cached, the tier is unknown: both windows count it and the gateway checks the counts.
-- Returns S settlement bit sets, then one {balance, purchased, spend, count in window 1, count in
-- window 2, the window that refused it (0: none), tier (-1: unknown)} per admission.
local s = tonumber(ARGV[1])
local out = {}
for i = 1, s do out[i] = settle((i - 1) * 4, tonumber(ARGV[6 + i])) end
local base = s * 4
local a = 6 + s
for j = 1, (#KEYS - base) / 4 do
  local b = base + (j - 1) * 4
  local c = a + (j - 1) * 14
  local acct = redis.call('HMGET', KEYS[b + 1], 'bal', 'paid')
  local spend = false
  if KEYS[b + 2] ~= '' then spend = redis.call('GET', KEYS[b + 2]) end
  local tier = -1
  if acct[2] then
    local paid = tonumber(acct[2])
    tier = 0
    for t = 1, 5 do
      if paid >= tonumber(ARGV[1 + t]) then tier = t end
    end
  end
  local counts = {0, 0}
  local refused = 0
  if tier >= 0 then
    for w = 1, 2 do
      if KEYS[b + 2 + w] ~= '' then
        counts[w] = tonumber(redis.call('GET', KEYS[b + 2 + w]) or '0')
        if counts[w] >= tonumber(ARGV[c + (w - 1) * 7 + 2 + tier]) then
          refused = w
          break
        end
      end
    end
  end
  if refused == 0 then
    for w = 1, 2 do
      if KEYS[b + 2 + w] ~= '' then
        counts[w] = redis.call('INCR', KEYS[b + 2 + w])
        if counts[w] == 1 then redis.call('EXPIRE', KEYS[b + 2 + w], ARGV[c + (w - 1) * 7 + 1]) end
      end
    end
  end
  out[s + j] = {acct[1], acct[2], spend, counts[1], counts[2], refused, tier}
end
return out
