-- Admission after a cache miss (the caches were filled in between): the verdict of verdict()
-- of reserve_one.lua, and the reservation when it is 0 and `dry` is 0.
-- KEYS = [RES, RESZ, RESD, the group's account, the key's spend or '', n budget counters];
-- ARGV = [request id, amount, bound, expiry, the key's monthly limit (-1 none), the group's
-- field, dry, n, then (cap, field) per budget]. Returns {verdict, the budgets' spends…}.
local bal = redis.call('HGET', KEYS[4], 'bal')
local spend = false
if KEYS[5] ~= '' then spend = redis.call('GET', KEYS[5]) end
local rid, amount, bound = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, gfield, n = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[8])
local v, spends = verdict(bal, spend, limit, amount, bound, gfield, 5, 8, n)
if v == 0 and ARGV[7] == '0' and rid ~= '' and amount > 0 then
  reserve(rid, amount, ARGV[4], gfield, 8, n)
end
local out = {v}
for i = 1, n do out[1 + i] = spends[i] end
return out
