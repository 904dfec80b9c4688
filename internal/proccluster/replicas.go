package proccluster

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/rpstream/rpstream/local"
)

// ErrReplicaDiffers is returned by CompareReplicas when a replica's file
// does not hold the leader's committed entries.
var ErrReplicaDiffers = errors.New("proccluster: replica differs from the leader")

// LeaderFile is where a node keeps its own (leader's) copy of stream name
// in its data directory.
func LeaderFile(dataDir, name string) string {
	return filepath.Join(dataDir, "streams", name, "data.stream")
}

// ReplicaFile is where a node keeps a replica of stream name that another
// node leads.
func ReplicaFile(dataDir, name string) string {
	return filepath.Join(dataDir, "replicas", name, "data.stream")
}

// CompareReplicas opens the leader's stream file and every replica file
// read-only (local.OpenReader; no process may be writing them) and checks
// that each replica holds the same entries, byte for byte, from the
// leader's head up to its committed index, which it returns. A replica may
// hold more entries than that (appended, not yet known committed). Errors
// wrap ErrReplicaDiffers when a replica is short or different, and are
// the opening error (local.ErrCorrupt...) when a file cannot be read.
func CompareReplicas(leaderPath string, replicaPaths []string) (uint64, error) {
	ls, err := local.OpenReader(leaderPath, local.Options{})
	if err != nil {
		return 0, fmt.Errorf("proccluster: leader: %w", err)
	}
	defer ls.Close()
	head, committed := ls.Head(), ls.Committed()
	for _, rp := range replicaPaths {
		if err := compareOne(ls, head, committed, rp); err != nil {
			return committed, err
		}
	}
	return committed, nil
}

func compareOne(ls *local.Stream, head, committed uint64, path string) error {
	rs, err := local.OpenReader(path, local.Options{})
	if err != nil {
		return fmt.Errorf("proccluster: replica: %w", err)
	}
	defer rs.Close()
	if rc := rs.Committed(); rc < committed {
		return fmt.Errorf("%w: %s has entries up to %d, the leader committed %d", ErrReplicaDiffers, path, rc, committed)
	}
	if rh := rs.Head(); rh > head {
		return fmt.Errorf("%w: %s starts at entry %d, the leader at %d", ErrReplicaDiffers, path, rh, head)
	}
	li, ri := ls.Iterator(head), rs.Iterator(head)
	for i := head; i < committed; i++ {
		if !li.Next() {
			return fmt.Errorf("proccluster: leader: entry %d unreadable: %v", i, li.Err())
		}
		if !ri.Next() {
			if err := ri.Err(); err != nil {
				return fmt.Errorf("%w: %s: entry %d: %w", ErrReplicaDiffers, path, i, err)
			}
			return fmt.Errorf("%w: %s ends at entry %d, the leader committed %d", ErrReplicaDiffers, path, i, committed)
		}
		if a, b := li.Entry().Data, ri.Entry().Data; !bytes.Equal(a, b) {
			return fmt.Errorf("%w: %s: entry %d is %d bytes %.16x..., the leader's %d bytes %.16x...", ErrReplicaDiffers, path, i, len(b), b, len(a), a)
		}
	}
	return nil
}
