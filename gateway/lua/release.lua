-- Give back reservations (KEYS = RES, RESZ, RESD; ARGV = request ids): the async runner's, when
-- a job ends (gateway/async_runner.py). Returns how many were still held.
local n = 0
for i = 1, #ARGV do n = n + release(ARGV[i]) end
return n
