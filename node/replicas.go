package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/rpstream/rpstream/remote"
)

// The copies this node holds of streams other nodes lead (as a replica or
// a backup target) live beside its own streams:
//
//	DIR/replicas/NAME/meta.json     leader, region size, highest epoch granted
//	DIR/replicas/NAME/data.stream   local/'s format, written by the leader over rdma
//
// meta.json is replaced atomically (write, fsync, rename, fsync the
// directory) whenever a higher epoch is granted, before the grant is
// answered: a restarted replica never accepts an epoch older than one it
// accepted before.

const (
	replicasDir = "replicas"
)

// replicaMeta is a replica's meta.json.
type replicaMeta struct {
	Leader     string `json:"leader"`
	RegionSize int    `json:"region_size"`
	Epoch      uint64 `json:"epoch"`
	// StreamID is the stream's id in the catalog.
	StreamID uint64 `json:"stream_id,omitempty"`
}

// Errors of the replica store.
var (
	// ErrWrongLeader refuses a writer that is not the stream's leader.
	ErrWrongLeader = errors.New("node: not the stream's leader")
	// ErrStaleEpoch refuses an epoch older than one granted before.
	ErrStaleEpoch = errors.New("node: epoch older than one granted before")
)

// replicas is the store of the copies this node holds for other leaders.
type replicas struct {
	dir        string // DIR/replicas
	maxRegions int

	mu    sync.Mutex
	metas map[string]replicaMeta
}

func openReplicas(dataDir string, maxStreamSize, regionSize int) (*replicas, error) {
	r := &replicas{dir: filepath.Join(dataDir, replicasDir), metas: map[string]replicaMeta{}}
	if maxStreamSize == 0 {
		maxStreamSize = 64 << 30
	}
	r.maxRegions = max(1, maxStreamSize/max(regionSize, 4096))
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(r.dir, e.Name())); err != nil {
				return nil, fmt.Errorf("node: removing leftover: %w", err)
			}
		}
	}
	return r, nil
}

func (r *replicas) path(name string) string { return filepath.Join(r.dir, name) }

// readMetaLocked returns stream name's replica meta, from memory or disk.
func (r *replicas) readMetaLocked(name string) (replicaMeta, error) {
	if m, ok := r.metas[name]; ok {
		return m, nil
	}
	var m replicaMeta
	b, err := os.ReadFile(filepath.Join(r.path(name), metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return m, fmt.Errorf("%w: no copy of %s", ErrNoStream, name)
	}
	if err != nil {
		return m, fmt.Errorf("node: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("node: replica %s: meta.json: %w", name, err)
	}
	r.metas[name] = m
	return m, nil
}

// writeMetaLocked replaces stream name's replica meta durably.
func (r *replicas) writeMetaLocked(name string, m replicaMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	dir := r.path(name)
	tmp := filepath.Join(dir, ".meta.json.new")
	os.Remove(tmp)
	if err := writeFileSync(tmp, append(b, '\n')); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, metaFile)); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	r.metas[name] = m
	return nil
}

// openStore opens (or, with create, makes) the copy of stream name that
// leader writes, with regions of regionSize bytes. The caller (the Hub)
// owns and closes it.
func (r *replicas) openStore(name, leader string, id uint64, regionSize int, create bool) (*remote.FileStore, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.readMetaLocked(name)
	switch {
	case errors.Is(err, ErrNoStream) && create:
		tmp := filepath.Join(r.dir, hiddenName(name, "new"))
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		m = replicaMeta{Leader: leader, RegionSize: regionSize, StreamID: id}
		b, _ := json.Marshal(m)
		if err := writeFileSync(filepath.Join(tmp, metaFile), append(b, '\n')); err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
		if err := os.Rename(tmp, r.path(name)); err != nil {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("node: %w", err)
		}
		if err := syncDir(r.dir); err != nil {
			return nil, err
		}
		r.metas[name] = m
	case err != nil:
		return nil, err
	}
	if m.StreamID != id {
		return nil, fmt.Errorf("%w: %s holds a copy of %s (id %d), not of id %d", ErrWrongLeader, r.dir, name, m.StreamID, id)
	}
	if m.Leader != leader {
		// The catalog moved the stream to another leader (checkCopy): the
		// copy is the same stream's, written by that leader from now on.
		m.Leader = leader
		if err := r.writeMetaLocked(name, m); err != nil {
			return nil, err
		}
	}
	if m.RegionSize != regionSize {
		return nil, fmt.Errorf("%w: copy of %s has regions of %d bytes, the leader %d", errBadArg, name, m.RegionSize, regionSize)
	}
	return remote.OpenFileStore(filepath.Join(r.path(name), streamFile), regionSize, r.maxRegions)
}

// authorize says whether writer may write stream name's copy under epoch:
// it must be the leader the copy was made for, with an epoch no older
// than the highest granted before, which is recorded durably first.
//
// With moved set (the catalog names writer as the stream's leader under
// epoch), a writer other than the copy's leader takes the copy over if
// its epoch is newer than any granted before: the stream failed over.
func (r *replicas) authorize(name string, epoch uint64, writer string, moved bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.readMetaLocked(name)
	if err != nil {
		return err
	}
	if epoch < m.Epoch {
		return fmt.Errorf("%w: %d < %d for %s", ErrStaleEpoch, epoch, m.Epoch, name)
	}
	if writer != m.Leader {
		if !moved || epoch == m.Epoch {
			return fmt.Errorf("%w: %s leads %s, not %s", ErrWrongLeader, m.Leader, name, writer)
		}
		m.Leader = writer
	}
	if epoch > m.Epoch {
		m.Epoch = epoch
		return r.writeMetaLocked(name, m)
	}
	return nil
}

// streamID is the catalog id of the stream whose copy is held as name.
func (r *replicas) streamID(name string) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.readMetaLocked(name)
	return m.StreamID, err
}

// copyFile returns the file of stream name's copy and the most it may
// grow to.
func (r *replicas) copyFile(name string) (path string, maxSize int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.readMetaLocked(name)
	if err != nil {
		return "", 0, err
	}
	return filepath.Join(r.path(name), streamFile), remote.SuperblockSize + r.maxRegions*m.RegionSize, nil
}

// has reports whether this node holds a copy of stream name.
func (r *replicas) has(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := r.readMetaLocked(name)
	return err == nil
}

// remove deletes stream name's copy (its Target dropped first by the
// caller).
func (r *replicas) remove(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removeLocked(name)
}

func (r *replicas) removeLocked(name string) error {
	delete(r.metas, name)
	gone := filepath.Join(r.dir, hiddenName(name, "del"))
	if err := os.Rename(r.path(name), gone); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: no copy of %s", ErrNoStream, name)
		}
		return fmt.Errorf("node: %w", err)
	}
	if err := syncDir(r.dir); err != nil {
		return err
	}
	return os.RemoveAll(gone)
}

// list names the copies held, sorted.
func (r *replicas) list() []string {
	ents, _ := os.ReadDir(r.dir)
	var names []string
	for _, e := range ents {
		if e.IsDir() && validName(e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}
