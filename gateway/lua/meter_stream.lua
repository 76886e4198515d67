-- Record a batch of metered requests: for each, settle its cost in the cache (settle() of
-- settle_one.lua, as admit.lua does), append it to the stream and count what it owes.
-- ARGV = [n, then per request: cost, group field, key field or '', the usage as JSON];
-- KEYS = 4 per request (as in settle_one.lua), then the stream and `portal:unsettled`.
-- Returns the n settlement bit sets (also kept in each entry as 'f').
local n = tonumber(ARGV[1])
local stream, owed = KEYS[n * 4 + 1], KEYS[n * 4 + 2]
local out = {}
for i = 1, n do
  local a = 1 + (i - 1) * 4
  local cost = tonumber(ARGV[a + 1])
  local flags = settle((i - 1) * 4, cost)
  redis.call('XADD', stream, '*', 'd', ARGV[a + 4], 'f', flags)
  if cost > 0 then
    redis.call('HINCRBY', owed, ARGV[a + 2], cost)
    if ARGV[a + 3] ~= '' then redis.call('HINCRBY', owed, ARGV[a + 3], cost) end
  end
  out[i] = flags
end
return out
