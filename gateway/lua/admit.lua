-- One call admits a batch of requests. First it gives back expired reservations and the
-- reservations of requests that ended unmetered, and settles the costs metered since the last
-- call (settle_all() of reserve_one.lua, which also moves budget counters and releases the
-- reservations of those requests).
-- KEYS = [RES, RESZ, RESD (reserve_one.lua), per settlement its 4 + n keys, per admission: the
-- group's cached account, the key's spend or '', the group's counters of the two windows of the
-- request's API family ('' for none), then its n hard budgets' counters].
-- ARGV = [now, bound, S, A, the purchase thresholds of tiers 1..5, request ids to release (comma
-- list or ''), per settlement cost, ids, n; per admission: 14 rate args (for each of its two
-- windows the counter's TTL and the window's limit at tiers 0..5), check (0: rate limit only),
-- request id ('' reserves nothing), amount, expiry, the key's monthly limit (-1 none), the group's
-- field, n, then (cap, field) per budget].
-- The group's tier comes from its cached purchases: a request at either window's limit is
-- refused and counted in neither (a refusal never uses up the other window). With the account
-- not cached, the tier is unknown: both windows count it and the gateway checks the counts.
-- A request is reserved for only when it is counted, not refused, and its verdict is 0.
-- Returns S settlement bit sets, then per admission {balance, purchased, spend, count in window
-- 1, count in window 2, the window that refused it (0: none), tier (-1: unknown), verdict,
-- reserved (0/1), the budgets' spends…}.
local now, bound = tonumber(ARGV[1]), tonumber(ARGV[2])
local s, admissions = tonumber(ARGV[3]), tonumber(ARGV[4])
expire_reservations(now)
release_all(ARGV[10])
local out, k, a = settle_all(s, 3, 10)
for j = 1, admissions do
  local acct = redis.call('HMGET', KEYS[k + 1], 'bal', 'paid')
  local spend = false
  if KEYS[k + 2] ~= '' then spend = redis.call('GET', KEYS[k + 2]) end
  local tier = -1
  if acct[2] then
    local paid = tonumber(acct[2])
    tier = 0
    for t = 1, 5 do
      if paid >= tonumber(ARGV[4 + t]) then tier = t end
    end
  end
  local counts = {0, 0}
  local refused = 0
  if tier >= 0 then
    for w = 1, 2 do
      if KEYS[k + 2 + w] ~= '' then
        counts[w] = tonumber(redis.call('GET', KEYS[k + 2 + w]) or '0')
        if counts[w] >= tonumber(ARGV[a + (w - 1) * 7 + 2 + tier]) then
          refused = w
          break
        end
      end
    end
  end
  if refused == 0 then
    for w = 1, 2 do
      if KEYS[k + 2 + w] ~= '' then
        counts[w] = redis.call('INCR', KEYS[k + 2 + w])
        if counts[w] == 1 then redis.call('EXPIRE', KEYS[k + 2 + w], ARGV[a + (w - 1) * 7 + 1]) end
      end
    end
  end
  local check, rid, amount = tonumber(ARGV[a + 15]), ARGV[a + 16], tonumber(ARGV[a + 17])
  local expiry, limit, gfield = ARGV[a + 18], tonumber(ARGV[a + 19]), ARGV[a + 20]
  local n = tonumber(ARGV[a + 21])
  local verdict_of, spends, reserved = 0, {}, 0
  if check == 1 then
    verdict_of, spends = verdict(acct[1], spend, limit, amount, bound, gfield, k + 4, a + 21, n)
    if verdict_of == 0 and refused == 0 and tier >= 0 and rid ~= '' and amount > 0 then
      reserve(rid, amount, expiry, gfield, a + 21, n)
      reserved = 1
    end
  end
  local row = {acct[1], acct[2], spend, counts[1], counts[2], refused, tier, verdict_of, reserved}
  for i = 1, n do row[9 + i] = spends[i] end
  out[s + j] = row
  k = k + 4 + n
  a = a + 21 + 2 * n
end
return out
