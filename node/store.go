package node

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/internal/validate"
	"github.com/rpstream/rpstream/local"
)

// Errors of the data directory, mapped to gRPC codes by statusOf.
var (
	// ErrBadName is returned for a stream name outside the allowed form.
	ErrBadName = errors.New("node: bad stream name")
	// ErrNoStream is returned for a stream that does not exist.
	ErrNoStream = errors.New("node: no such stream")
	// ErrExists is returned by CreateStream for a name in use.
	ErrExists = errors.New("node: stream exists")
	// ErrClosing is returned by every call once Shutdown has begun.
	ErrClosing = errors.New("node: node is shutting down")
)

const (
	metaFile   = "meta.json"
	streamFile = "data.stream"
)

// meta is meta.json (see the package comment).
type meta struct {
	Replicas   uint32    `json:"replicas"`
	Acks       string    `json:"acks"`
	RegionSize int       `json:"region_size"`
	Epoch      uint64    `json:"epoch"`
	Created    time.Time `json:"created"`
	// Followers are the members holding the other replicas, and Backup
	// the backup target holding an extra copy ("" for none), chosen at
	// creation; Peers is their peer addresses then, used when membership
	// does not know them (yet).
	Followers []string `json:"followers,omitempty"`
	// Envelope says the stream's entries carry an envelope (envelope.go):
	// every stream made since envelopes exist.
	Envelope bool              `json:"envelope,omitempty"`
	Backup   string            `json:"backup,omitempty"`
	Peers    map[string]string `json:"peers,omitempty"`
	// StreamID is the stream's id in the catalog (and its file's); 0 for
	// a stream of a node without a catalog.
	StreamID uint64 `json:"stream_id,omitempty"`
	// Retention is the retention policy of a stream of a node without a
	// catalog (the catalog holds it otherwise).
	Retention *retentionMeta `json:"retention,omitempty"`
	// RestoredEpoch is the epoch of the restore whose fetched copy these
	// files are (restore.go); 0 if they were not restored.
	RestoredEpoch uint64 `json:"restored_epoch,omitempty"`
}

// replicated reports whether the stream has copies on other members.
func (m meta) replicated() bool { return len(m.Followers) > 0 || m.Backup != "" }

// validName reports whether name is 1 to 128 bytes of [A-Za-z0-9._-]
// starting with a letter or digit: safe as a file name, never hidden
// (validate.Name, the rule streamcli, streamnode and the catalog check).
func validName(name string) error {
	if err := validate.Name(name); err != nil {
		return fmt.Errorf("%w: %v", ErrBadName, err)
	}
	return nil
}

func ackName(a api.AckPolicy) string {
	switch a {
	case api.AckPolicy_ACK_POLICY_LEADER:
		return "leader"
	case api.AckPolicy_ACK_POLICY_ALL:
		return "all"
	default:
		return "quorum"
	}
}

func ackPolicy(s string) api.AckPolicy {
	switch s {
	case "leader":
		return api.AckPolicy_ACK_POLICY_LEADER
	case "all":
		return api.AckPolicy_ACK_POLICY_ALL
	default:
		return api.AckPolicy_ACK_POLICY_QUORUM
	}
}

// store is the streams directory of a data directory.
type store struct {
	dir           string // DIR/streams
	maxStreamSize int

	// mu guards ids: the catalog id of each stream whose meta.json was
	// read or written, so that comparing the directory with the catalog
	// (reconcile) reads no file per stream. A read of meta.json and the
	// rename of a remove each hold it throughout, so a read's id cannot
	// land in ids after a remove cleared it. (Read outside it, one read
	// began before a remove and cached the id after it: the node then
	// took the files as still there and never recorded its copy dropped,
	// so the deleted name stayed taken.)
	mu  sync.Mutex
	ids map[string]uint64
}

func openStore(dataDir string, maxStreamSize int) (*store, error) {
	st := &store{dir: filepath.Join(dataDir, "streams"), maxStreamSize: maxStreamSize, ids: map[string]uint64{}}
	if err := os.MkdirAll(st.dir, 0o755); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	// Leftovers of creations and deletions cut short by a crash.
	ents, err := os.ReadDir(st.dir)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(st.dir, e.Name())); err != nil {
				return nil, fmt.Errorf("node: removing leftover: %w", err)
			}
		}
	}
	return st, nil
}

func (st *store) path(name string) string { return filepath.Join(st.dir, name) }

func randUint64() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func hiddenName(name, what string) string {
	var b [6]byte
	rand.Read(b[:])
	return "." + name + "." + what + "-" + hex.EncodeToString(b[:])
}

// create makes stream name durably, with m as its meta.json.
func (st *store) create(name string, m meta) error {
	if _, err := os.Stat(st.path(name)); err == nil {
		return fmt.Errorf("%w: %s", ErrExists, name)
	}
	tmp := filepath.Join(st.dir, hiddenName(name, "new"))
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	s, err := local.Create(filepath.Join(tmp, streamFile), local.Options{RegionSize: m.RegionSize, MaxSize: st.maxStreamSize, Epoch: m.Epoch, SpareRegions: -1, StreamID: m.StreamID})
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := writeFileSync(filepath.Join(tmp, metaFile), append(b, '\n')); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	// rename fails if name appeared meanwhile (a non-empty directory).
	if err := os.Rename(tmp, st.path(name)); err != nil {
		if _, serr := os.Stat(st.path(name)); serr == nil {
			return fmt.Errorf("%w: %s", ErrExists, name)
		}
		return fmt.Errorf("node: %w", err)
	}
	ok = true
	st.mu.Lock()
	st.ids[name] = m.StreamID
	st.mu.Unlock()
	return syncDir(st.dir)
}

// readMeta reads stream name's meta.json; ErrNoStream if there is none.
func (st *store) readMeta(name string) (meta, error) {
	var m meta
	st.mu.Lock()
	defer st.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(st.path(name), metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return m, fmt.Errorf("%w: %s", ErrNoStream, name)
	}
	if err != nil {
		return m, fmt.Errorf("node: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("node: %s: %w: meta.json: %v", name, local.ErrCorrupt, err)
	}
	st.ids[name] = m.StreamID
	return m, nil
}

// streamID is the catalog id of stream name, from memory once its
// meta.json was read.
func (st *store) streamID(name string) (uint64, error) {
	st.mu.Lock()
	id, ok := st.ids[name]
	st.mu.Unlock()
	if ok {
		return id, nil
	}
	m, err := st.readMeta(name)
	return m.StreamID, err
}

// writeMeta replaces stream name's meta.json durably.
func (st *store) writeMeta(name string, m meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	dir := st.path(name)
	tmp := filepath.Join(dir, ".meta.json.new")
	os.Remove(tmp)
	if err := writeFileSync(tmp, append(b, '\n')); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, metaFile)); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return syncDir(dir)
}

// open opens stream name for writing.
func (st *store) open(name string, m meta) (*local.Stream, error) {
	return local.Open(filepath.Join(st.path(name), streamFile), local.Options{MaxSize: st.maxStreamSize, Epoch: m.Epoch})
}

// remove deletes stream name, which must be closed.
func (st *store) remove(name string) error {
	gone := filepath.Join(st.dir, hiddenName(name, "del"))
	st.mu.Lock()
	err := os.Rename(st.path(name), gone)
	delete(st.ids, name)
	st.mu.Unlock()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNoStream, name)
		}
		return fmt.Errorf("node: %w", err)
	}
	if err := syncDir(st.dir); err != nil {
		return err
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// list names the streams, sorted.
func (st *store) list() ([]string, error) {
	ents, err := os.ReadDir(st.dir)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && validName(e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("node: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("node: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}
