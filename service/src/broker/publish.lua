-- Applies one batch of the writer that holds the lease, atomically: each event gets its
-- stream's next position (HINCRBY by the source's step: 1, or more where the source skipped),
-- an entry in its stream (id "seq-0", bounded to about ARGV[4] entries), a book checkpoint
-- when one is given; then the whole batch is published as the edges apply it.
--
-- KEYS: lease, epoch, positions, applied, checkpoints, stale, then one per item (the event's
--       stream; the stale key for a status item).
-- ARGV: writer, batch id, events channel, max length, publish time (us), the id of the last
--       batch this writer saw applied in this epoch ('' for none), then three per item:
--       an event's step, its recorded message, its checkpoint ('' for none);
--       or 'L'/'S' (live/stale), the symbol, ''.
-- Returns the items applied; 0 when this batch id was already applied (a retried publish).
-- LOST when the broker's last applied batch is not the writer's: it lost acknowledged writes
-- (a failover to a replica that lagged), so continuing would number events again that edges
-- already served; the writer starts a new epoch instead.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTLEADER this writer does not hold the lease')
end
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  return redis.error_reply('NOEPOCH the broker holds no epoch')
end
local applied = redis.call('GET', KEYS[4]) or ''
if applied == ARGV[2] then
  return 0
end
if applied ~= ARGV[6] then
  return redis.error_reply('LOST the broker no longer holds this writer\'s last batch')
end
local out = {epoch .. ' ' .. ARGV[5]}
for i = 7, #KEYS do
  local a = 7 + (i - 7) * 3
  local step, body, checkpoint = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if step == 'L' then
    redis.call('HDEL', KEYS[6], body)
    out[#out + 1] = '! ' .. body .. ' live'
  elseif step == 'S' then
    redis.call('HSET', KEYS[6], body, '1')
    out[#out + 1] = '! ' .. body .. ' stale'
  else
    local seq = redis.call('HINCRBY', KEYS[3], KEYS[i], step)
    redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[4], seq .. '-0', 'd', body)
    if checkpoint ~= '' then
      redis.call('HSET', KEYS[5], KEYS[i], seq .. ' ' .. checkpoint)
    end
    out[#out + 1] = seq .. ' ' .. body
  end
end
redis.call('SET', KEYS[4], ARGV[2])
redis.call('PUBLISH', ARGV[3], table.concat(out, '\n'))
return #KEYS - 6
