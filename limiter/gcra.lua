-- GCRA in integer microseconds: a line-by-line translation of gcra() in
-- gcra.go. Redis Lua numbers are doubles, exact for integers below 2^53
-- (about 285 years of microseconds), so no rounding creeps in.
-- KEYS[1]  limiter key
-- ARGV[1]  now in µs, or 0 to use the Redis server clock
-- ARGV[2]  emission interval T in µs
-- ARGV[3]  burst
-- ARGV[4]  cost n
-- ARGV[5]  take up to this much when admitted (n for a plain decision)
-- returns {allowed, remaining, retry_after_us (-1 = never), reset_after_us}
local now = tonumber(ARGV[1])
if now == 0 then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local t = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local up_to = tonumber(ARGV[5])

local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then
  tat = now
end
local room = t * burst - (tat - now)
local avail = 0
if room > 0 then
  avail = math.floor(room / t)
end
if n > burst then
  return {0, avail, -1, tat - now}
end
if n > avail then
  return {0, avail, n * t - room, tat - now}
end
local granted = math.min(up_to, avail)
tat = tat + granted * t
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
return {granted, avail - granted, 0, tat - now}
