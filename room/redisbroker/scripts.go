package redisbroker

import "github.com/redis/go-redis/v9"

// Script replies begin with a status code.
const (
	statusOK       = 1 // committed: seq, version, time (ms), stream id
	statusDup      = 2 // the cid was committed before: its seq
	statusConflict = 3 // a patch whose version is not current+1: current version, seq
	statusLost     = 4 // the room's epoch is not the caller's: its state was lost or replaced
)

// appendScript commits one entry, atomically: epoch check, cid dedup,
// version compare-and-set (patches), seq increment, document write, XADD to
// the room stream with both trims, cid index.
//
//	KEYS: state hash, stream, cid zset
//	ARGV: 1 kind, 2 version (patch: current+1), 3 doc (patch), 4 from,
//	      5 cid, 6 ops, 7 data, 8 epoch expected ("" = any), 9 epoch for a
//	      new room, 10 stream MAXLEN (~), 11 max age (ms), 12 cid window
var appendScript = redis.NewScript(`
local st, log, cids = KEYS[1], KEYS[2], KEYS[3]
local ep = redis.call('HGET', st, 'ep')
if ARGV[8] ~= '' and ep ~= ARGV[8] then
  return {4}
end
if not ep then
  ep = ARGV[9]
  redis.call('HSET', st, 'ep', ep)
end
local cid = ARGV[5]
if cid ~= '' then
  local s = redis.call('ZSCORE', cids, cid)
  if s then return {2, tonumber(s)} end
end
local v = tonumber(redis.call('HGET', st, 'v') or '0')
local seq = tonumber(redis.call('HGET', st, 'seq') or '0')
if ARGV[1] == 'patch' then
  if tonumber(ARGV[2]) ~= v + 1 then return {3, v, seq} end
  v = v + 1
  redis.call('HSET', st, 'doc', ARGV[3], 'v', v)
end
seq = seq + 1
redis.call('HSET', st, 'seq', seq)
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('XADD', log, 'MAXLEN', '~', ARGV[10], '*',
  's', seq, 'v', v, 't', ms, 'k', ARGV[1], 'f', ARGV[4], 'c', cid, 'o', ARGV[6], 'd', ARGV[7], 'ep', ep)
redis.call('XTRIM', log, 'MINID', '~', tostring(ms - tonumber(ARGV[11])))
if cid ~= '' then
  redis.call('ZADD', cids, seq, cid)
  redis.call('ZREMRANGEBYRANK', cids, 0, -(tonumber(ARGV[12]) + 1))
end
return {1, seq, v, ms, id}
`)

// snapshotScript reads a room's state and log tail at one point of its
// stream, creating the room's epoch if the room is new.
//
//	KEYS: state hash, stream
//	ARGV: 1 epoch for a new room, 2 log entries to return (newest first)
//	reply: doc, version, seq, epoch, last stream id ("0-0" if none), time
//	       (ms), entries [[id, [field, value, ...]], ...] newest first
var snapshotScript = redis.NewScript(`
local st, log = KEYS[1], KEYS[2]
local h = redis.call('HMGET', st, 'doc', 'v', 'seq', 'ep')
if not h[4] then
  h[4] = ARGV[1]
  redis.call('HSET', st, 'ep', h[4])
end
local tail = redis.call('XREVRANGE', log, '+', '-', 'COUNT', ARGV[2])
local last = '0-0'
if #tail > 0 then last = tail[1][1] end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {h[1] or '{}', h[2] or '0', h[3] or '0', h[4], last, ms, tail}
`)
