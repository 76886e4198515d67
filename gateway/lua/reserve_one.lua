-- Reservations and budget counters (gateway/admission.py, gateway/budgets.py); helpers the
-- admission, settlement and metering scripts start with. RES = the hash of what admitted requests
-- have reserved, per field ('g:<group>', 'b:<budget>'); RESZ = the zset of reservations by request
-- id, scored by when they expire; RESD = the hash request id -> 'amount|field|field…'.
local RES, RESZ, RESD = KEYS[1], KEYS[2], KEYS[3]

-- Give a reservation back (once: a second release, or one after its expiry, does nothing).
local function release(rid)
  if rid == '' or redis.call('ZREM', RESZ, rid) == 0 then return 0 end
  local d = redis.call('HGET', RESD, rid)
  redis.call('HDEL', RESD, rid)
  if d then
    local amount = nil
    for part in string.gmatch(d, '[^|]+') do
      if amount == nil then
        amount = tonumber(part)
      elseif redis.call('HINCRBY', RES, part, 0 - amount) <= 0 then
        redis.call('HDEL', RES, part)
      end
    end
  end
  return 1
end

local function release_all(rids)
  for rid in string.gmatch(rids, '[^,]+') do release(rid) end
end

-- Reservations whose holder died (never released): give back up to 32 per call.
local function expire_reservations(now)
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', RESZ, '-inf', now, 'LIMIT', 0, 32)) do
    release(rid)
  end
end

-- Settlements from KEYS[k+1..], ARGV[a+1..]: per settlement ARGV cost, request ids to release
-- (comma list or ''), n; KEYS the 4 of settle() then n budget counters. Returns the bit sets
-- and the next k and a.
local function settle_all(count, k, a)
  local out = {}
  for i = 1, count do
    local cost, n = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3])
    out[i] = settle(k, cost)
    for j = 1, n do
      if redis.call('EXISTS', KEYS[k + 4 + j]) == 1 then
        redis.call('INCRBY', KEYS[k + 4 + j], cost)
      end
    end
    release_all(ARGV[a + 2])
    k = k + 4 + n
    a = a + 3
  end
  return out, k, a
end

-- May a request with reservation `amount` be admitted? bal/spend as read (false: not cached),
-- limit the key's monthly limit (-1: none), KEYS[k+1..k+n] the budgets' counters, ARGV[a+1..]
-- their (cap, field) pairs. Returns the verdict (-1 something is not cached; 0 yes; 1 the group's
-- credit; 2 the key's monthly limit; 2 + i budget i) and the budgets' spends.
local function verdict(bal, spend, limit, amount, bound, gfield, k, a, n)
  local spends = {}
  local unknown = not bal or (limit >= 0 and not spend)
  for i = 1, n do
    spends[i] = redis.call('GET', KEYS[k + i])
    if not spends[i] then unknown = true end
  end
  if unknown then return -1, spends end
  bal = tonumber(bal)
  if bal <= 0 or bal - tonumber(redis.call('HGET', RES, gfield) or '0') - amount < -bound then
    return 1, spends
  end
  if limit >= 0 and tonumber(spend) >= limit then return 2, spends end
  for i = 1, n do
    local spent, cap = tonumber(spends[i]), tonumber(ARGV[a + 2 * i - 1])
    local held = tonumber(redis.call('HGET', RES, ARGV[a + 2 * i]) or '0')
    if spent >= cap or spent + held + amount > cap + bound then return 2 + i, spends end
  end
  return 0, spends
end

-- Hold `amount` for request `rid` against the group (gfield) and the budgets (ARGV[a+2i]).
local function reserve(rid, amount, expiry, gfield, a, n)
  local d = {tostring(amount), gfield}
  for i = 1, n do d[#d + 1] = ARGV[a + 2 * i] end
  redis.call('HSET', RESD, rid, table.concat(d, '|'))
  redis.call('ZADD', RESZ, expiry, rid)
  for i = 2, #d do redis.call('HINCRBY', RES, d[i], amount) end
end
