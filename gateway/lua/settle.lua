-- Settlements alone, when no admission came to carry them (settle() of settle_one.lua):
-- ARGV = costs, KEYS = 4 per cost.
local out = {}
for i = 1, #ARGV do out[i] = settle((i - 1) * 4, tonumber(ARGV[i])) end
return out
