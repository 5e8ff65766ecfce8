package redisbroker

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// reader is one goroutine reading the streams of its rooms with one XREAD
// BLOCK on one connection, plus its doorbell stream: ringing the doorbell
// (an XADD) makes a blocked read return, so a room added to the set is read
// at once. The doorbell is read from the last id seen, so a ring that lands
// before the XREAD is issued is not lost.
type reader struct {
	b    *Broker
	bell string
	quit chan struct{} // closed when a per-room reader has no room left

	mu      sync.Mutex
	rooms   map[follower]struct{}
	perRoom bool
	stopped bool
}

// follower is one stream a reader reads: a room's entries (roomSub) or its
// presence events (presenceWatch).
type follower interface {
	// key is the stream's key.
	key() string
	// position is where to read from; false means skip it this round.
	position() (cursor string, ok bool)
	// deliver takes the messages read after cursor from.
	deliver(from string, msgs []redis.XMessage)
}

// startReader starts a reader. Called with b.mu held and b not closed.
func (b *Broker) startReader(bell string) *reader {
	rd := &reader{b: b, bell: bell, quit: make(chan struct{}), rooms: map[follower]struct{}{}, perRoom: b.opts.ReaderPerRoom}
	b.wg.Add(1)
	go rd.run()
	return rd
}

func (rd *reader) add(ctx context.Context, rs follower) {
	rd.mu.Lock()
	rd.rooms[rs] = struct{}{}
	rd.mu.Unlock()
	rd.ring(ctx)
}

// remove drops rs; a per-room reader then stops.
func (rd *reader) remove(rs follower) {
	rd.mu.Lock()
	delete(rd.rooms, rs)
	stop := rd.perRoom && len(rd.rooms) == 0 && !rd.stopped
	if stop {
		rd.stopped = true
		close(rd.quit)
	}
	rd.mu.Unlock()
	if stop {
		ctx, cancel := context.WithTimeout(rd.b.ctx, time.Second)
		rd.ring(ctx)
		cancel()
	}
}

// ring wakes the reader's blocked XREAD. Best effort: if Redis is not
// reachable the reader is not blocked on it either, and a read issued
// before a lost ring still returns within blockTimeout.
func (rd *reader) ring(ctx context.Context) {
	_, err := rd.b.cmd.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: rd.bell, MaxLen: 1, Values: []string{"r", "1"}})
		p.PExpire(ctx, rd.bell, time.Hour)
		return nil
	})
	if err != nil {
		rd.b.log.Debug("redisbroker: doorbell", "err", err)
	}
}

type cursor struct {
	f    follower
	from string
}

func (rd *reader) run() {
	defer rd.b.wg.Done()
	b := rd.b
	bellID := "0-0"
	failures := 0
	byKey := map[string]cursor{}
	var streams, ids []string
	for {
		select {
		case <-rd.quit:
			return
		case <-b.ctx.Done():
			return
		default:
		}
		clear(byKey)
		streams, ids = append(streams[:0], rd.bell), append(ids[:0], bellID)
		rd.mu.Lock()
		for f := range rd.rooms {
			if from, ok := f.position(); ok {
				k := f.key()
				if _, dup := byKey[k]; !dup {
					streams = append(streams, k)
				}
				// A room released and subscribed again can briefly
				// have two records; the one seen active last is
				// the live one (see release).
				byKey[k] = cursor{f, from}
			}
		}
		rd.mu.Unlock()
		ids = ids[:1]
		for _, k := range streams[1:] {
			ids = append(ids, byKey[k].from)
		}
		res, err := b.rd.XRead(b.ctx, &redis.XReadArgs{Streams: append(streams, ids...), Count: 1000, Block: blockTimeout}).Result()
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		if err != nil {
			if b.ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 {
				b.log.Warn("redisbroker: reading streams failed; retrying", "err", err)
			}
			if !rd.pause(backoff(failures)) {
				return
			}
			continue
		}
		if failures > 0 {
			failures = 0
			b.log.Info("redisbroker: reading streams again")
			rd.checkEpochs(byKey)
		}
		for _, xs := range res {
			if xs.Stream == rd.bell {
				if n := len(xs.Messages); n > 0 {
					bellID = xs.Messages[n-1].ID
				}
				continue
			}
			if c, ok := byKey[xs.Stream]; ok {
				c.f.deliver(c.from, xs.Messages)
			}
		}
	}
}

// pause waits d; false means the reader must stop.
func (rd *reader) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-rd.quit:
		return false
	case <-rd.b.ctx.Done():
		return false
	}
}

// checkEpochs, after Redis was unreachable, compares every room's epoch with
// the one being followed: a Redis that restarted without its data shows up
// here even if nothing is written to the room.
func (rd *reader) checkEpochs(rooms map[string]cursor) {
	ctx, cancel := context.WithTimeout(rd.b.ctx, 10*time.Second)
	defer cancel()
	cmds := map[*roomSub]*redis.StringCmd{}
	_, err := rd.b.cmd.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range rooms {
			if rs, ok := c.f.(*roomSub); ok {
				cmds[rs] = p.HGet(ctx, rs.k.st, "ep")
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		rd.b.log.Warn("redisbroker: checking room epochs", "err", err)
		return
	}
	for rs, cmd := range cmds {
		ep, err := cmd.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			continue
		}
		rs.mu.Lock()
		if rs.active && ep != rs.epoch {
			rd.b.lostLocked(rs, "the room's epoch changed while redis was unreachable")
		}
		rs.mu.Unlock()
	}
}

// backoff is the wait before retry n (1, 2, ...): full jitter up to
// min(2 s, 50 ms * 2^n).
func backoff(n int) time.Duration {
	d := 50 * time.Millisecond << min(n, 6)
	d = min(d, 2*time.Second)
	return time.Duration(rand.Int64N(int64(d)) + 1)
}
