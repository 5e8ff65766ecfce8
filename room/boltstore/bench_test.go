package boltstore

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/roomwire/roomwire/room"
)

// BenchmarkSave measures Saves per second: one room (saves are sequential,
// as under a MemoryBroker's room lock) and 16 or 64 rooms saving at once,
// for each commit mode, synced and not.
//
//	go test -tags rwstub -run '^$' -bench Save -benchtime 2s ./room/boltstore
func BenchmarkSave(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, mode := range []struct {
			name string
			m    commitMode
		}{{"group", commitGroup}, {"update", commitUpdate}, {"batch", commitBatch}} {
			for _, rooms := range []int{1, 16, 64} {
				name := fmt.Sprintf("%s/rooms=%d", mode.name, rooms)
				if !sync {
					name = "nosync/" + name
				} else {
					name = "fsync/" + name
				}
				b.Run(name, func(b *testing.B) { benchSave(b, mode.m, rooms, !sync) })
			}
		}
	}
}

func benchSave(b *testing.B, mode commitMode, rooms int, noSync bool) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), FileName), 0o600, &bolt.Options{NoSync: noSync, FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bucketRooms); return err })
	s := newStore(db, room.LogLimits{}, mode)
	defer s.Close()
	ctx := context.Background()
	doc := []byte(`{"title":"a small document","n":12345,"list":[1,2,3]}`)
	ops := json.RawMessage(`[{"op":"replace","path":"/n","value":12346}]`)
	var wg sync.WaitGroup
	per := (b.N + rooms - 1) / rooms
	b.ResetTimer()
	for r := range rooms {
		wg.Go(func() {
			name := fmt.Sprint("room", r)
			for i := 1; i <= per; i++ {
				e := &room.Entry{Seq: uint64(i), Version: uint64(i), Kind: room.KindPatch, From: "sid", CID: "cid", Ops: ops, Time: time.Now().UnixMilli()}
				if err := s.Save(ctx, name, e, doc); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(per*rooms)/b.Elapsed().Seconds(), "saves/s")
}
