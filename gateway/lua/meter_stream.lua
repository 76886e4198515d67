-- Record a batch of metered requests: for each, settle its cost in the cache (settle_all() of
-- reserve_one.lua, as admit.lua does: balance, key spend, budget counters, its reservation given
-- back), append it to the stream and count what it owes.
-- KEYS = [RES, RESZ, RESD, the stream, `portal:unsettled`, then per request the 4 + n keys of
-- settle_all()]; ARGV = [count, then per request: cost, request ids, n (settle_all()), the group
-- field, the key's and budgets' fields (comma list, or ''), the usage as JSON].
-- Returns the bit sets (also kept in each entry as 'f').
local count = tonumber(ARGV[1])
local stream, owed = KEYS[4], KEYS[5]
local out = {}
local k, a = 5, 1
for i = 1, count do
  local flags
  flags, k = settle_all(1, k, a)
  local cost = tonumber(ARGV[a + 1])
  redis.call('XADD', stream, '*', 'd', ARGV[a + 6], 'f', flags[1])
  if cost > 0 then
    redis.call('HINCRBY', owed, ARGV[a + 4], cost)
    for field in string.gmatch(ARGV[a + 5], '[^,]+') do redis.call('HINCRBY', owed, field, cost) end
  end
  out[i] = flags[1]
  a = a + 6
end
return out
