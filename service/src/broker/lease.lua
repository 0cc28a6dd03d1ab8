-- The writer's lease. Its holder renews it; anyone takes it when it is free (expired, or the
-- broker lost its data). A writer that takes it when another wrote last starts a new epoch:
-- it did not see what the last one published, so positions start again and every stream is
-- emptied. The writer that wrote last takes an expired lease back in the same epoch (nobody
-- wrote in between: a proven continuation, as after the broker was paused). A holder asking
-- for a new epoch (ARGV[5] = '1': it lost events while the broker was away) gets one.
--
-- KEYS: lease, epoch, positions, applied, checkpoints, meta, stale, last writer.
-- ARGV: writer, time to live (ms), new epoch, meta, new-epoch request, events channel,
--       time (us).
-- Returns {0, holder} (someone else holds it), {1, epoch} (kept), {2, epoch} (a new epoch).
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {0, holder}
end
local epoch = redis.call('GET', KEYS[2])
if epoch and ARGV[5] ~= '1' and (holder or redis.call('GET', KEYS[8]) == ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, epoch}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[8], ARGV[1])
for _, key in ipairs(redis.call('HKEYS', KEYS[3])) do
  redis.call('DEL', key)
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[7])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[6], ARGV[4])
redis.call('PUBLISH', ARGV[6], ARGV[3] .. ' ' .. ARGV[7])
return {2, ARGV[3]}
