package node

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestStoreRemoveRacesReads: reads of a stream's id that run while the
// stream is removed never leave its id behind. One that did (read
// before the remove, cached after it) made the node take a deleted
// stream's files as still there: it never recorded them dropped, and
// the catalog kept the name taken ("deleting") for good.
func TestStoreRemoveRacesReads(t *testing.T) {
	st, err := openStore(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	const name = "raced"
	for round := range 300 {
		// The directory as create leaves it, without a stream file:
		// only meta.json is read here.
		if err := os.Mkdir(st.path(name), 0o755); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(meta{StreamID: uint64(round + 1)})
		if err := os.WriteFile(filepath.Join(st.path(name), metaFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for !stop.Load() {
					st.streamID(name)
				}
			})
		}
		if err := st.remove(name); err != nil {
			t.Fatal(err)
		}
		stop.Store(true)
		wg.Wait()
		if id, err := st.streamID(name); !errors.Is(err, ErrNoStream) {
			t.Fatalf("round %d: stream id %d (err %v) after the stream was removed, want ErrNoStream", round, id, err)
		}
	}
}
