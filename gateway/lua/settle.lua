-- Settlements alone, when no admission came to carry them (settle_all() of reserve_one.lua),
-- and reservations of requests that ended unmetered given back.
-- KEYS = [RES, RESZ, RESD, per settlement 4 + n keys]; ARGV = [S, request ids to release (comma
-- list or ''), per settlement cost, ids, n]. Returns the S bit sets.
release_all(ARGV[2])
local out = settle_all(tonumber(ARGV[1]), 3, 2)
return out
