-- After a settlement's commit: acknowledge and delete each entry, and for each one acknowledged
-- now (not by an earlier, interrupted settlement) stop counting what it owed. KEYS = the stream,
-- `portal:unsettled`; ARGV = [consumer group, then per entry: id, group field, the key's and
-- budgets' fields (comma list, or ''), cost]. Returns how many were acknowledged.
local n = 0
for i = 2, #ARGV, 4 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    n = n + 1
    local cost = tonumber(ARGV[i + 3])
    if cost > 0 then
      local fields = {ARGV[i + 1]}
      for field in string.gmatch(ARGV[i + 2], '[^,]+') do fields[#fields + 1] = field end
      for _, field in ipairs(fields) do
        if field ~= '' and redis.call('HINCRBY', KEYS[2], field, 0 - cost) <= 0 then
          redis.call('HDEL', KEYS[2], field)
        end
      end
    end
  end
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return n
