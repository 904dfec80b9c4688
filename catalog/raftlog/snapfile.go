package raftlog

import (
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Snapshot file format constants (see the package comment). They never
// change without a bump of snapVersion.
const (
	snapMagic      = "rpraftsn"
	snapVersion    = 1
	snapHeaderSize = 32
	snapCRCFrom    = 16 // the checksum covers the file from here
	snapPrefix     = "snap-"
	snapSuffix     = ".snap"
	tmpSuffix      = ".tmp"

	// snapReceived marks a snapshot received from the leader (Save); the
	// others were taken by the application (CreateSnapshot) from entries
	// the log holds.
	snapReceived = 1 << 0
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapName is the file name of the snapshot at (term, index).
func snapName(term, index uint64) string {
	return fmt.Sprintf("%s%016x-%016x%s", snapPrefix, term, index, snapSuffix)
}

// parseSnapName returns the term and index a snapshot file name carries.
func parseSnapName(name string) (term, index uint64, ok bool) {
	if len(name) != len(snapName(0, 0)) || !strings.HasPrefix(name, snapPrefix) || !strings.HasSuffix(name, snapSuffix) {
		return 0, 0, false
	}
	mid := name[len(snapPrefix) : len(name)-len(snapSuffix)]
	if mid[16] != '-' {
		return 0, 0, false
	}
	term, err1 := strconv.ParseUint(mid[:16], 16, 64)
	index, err2 := strconv.ParseUint(mid[17:], 16, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return term, index, snapName(term, index) == name
}

// encodeSnapFile returns the bytes of a snapshot file holding snap.
func encodeSnapFile(snap *raftpb.Snapshot, received bool) ([]byte, error) {
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
	if err != nil {
		return nil, fmt.Errorf("raftlog: marshal snapshot: %w", err)
	}
	b := make([]byte, snapHeaderSize, snapHeaderSize+len(body))
	copy(b, snapMagic)
	le.PutUint32(b[8:], snapVersion)
	le.PutUint64(b[16:], uint64(len(body)))
	if received {
		le.PutUint32(b[24:], snapReceived)
	}
	b = append(b, body...)
	le.PutUint32(b[12:], crc32.Checksum(b[snapCRCFrom:], castagnoli))
	return b, nil
}

// decodeSnapFile checks a snapshot file's bytes against its name and
// returns the snapshot and whether it was received from the leader. The
// error says what is wrong.
func decodeSnapFile(name string, b []byte) (snap *raftpb.Snapshot, received bool, err error) {
	term, index, ok := parseSnapName(name)
	if !ok {
		return nil, false, fmt.Errorf("not a snapshot file name")
	}
	if len(b) < snapHeaderSize {
		return nil, false, fmt.Errorf("%d bytes, shorter than the %d-byte header (cut short?)", len(b), snapHeaderSize)
	}
	if string(b[:8]) != snapMagic {
		return nil, false, fmt.Errorf("bad magic %q", b[:8])
	}
	if v := le.Uint32(b[8:]); v != snapVersion {
		return nil, false, fmt.Errorf("format version %d, this build reads %d", v, snapVersion)
	}
	if n := le.Uint64(b[16:]); n != uint64(len(b)-snapHeaderSize) {
		return nil, false, fmt.Errorf("header says %d bytes of snapshot, the file holds %d (cut short?)", n, len(b)-snapHeaderSize)
	}
	if got, want := le.Uint32(b[12:]), crc32.Checksum(b[snapCRCFrom:], castagnoli); got != want {
		return nil, false, fmt.Errorf("checksum %08x, want %08x", got, want)
	}
	flags := le.Uint32(b[24:])
	if flags&^snapReceived != 0 || le.Uint32(b[28:]) != 0 {
		return nil, false, fmt.Errorf("unknown flags %#x or reserved word %#x", flags, le.Uint32(b[28:]))
	}
	snap = &raftpb.Snapshot{}
	if err := proto.Unmarshal(b[snapHeaderSize:], snap); err != nil {
		return nil, false, fmt.Errorf("snapshot protobuf: %w", err)
	}
	md := snap.GetMetadata()
	if md.GetIndex() != index || md.GetTerm() != term || index == 0 {
		return nil, false, fmt.Errorf("holds the snapshot at index %d term %d, its name says %d term %d", md.GetIndex(), md.GetTerm(), index, term)
	}
	raftpb.EnsureSnapshot(snap)
	return snap, flags&snapReceived != 0, nil
}

// snapDir is where snapshot files live. Write is atomic and durable: after
// a crash a file written is there in full or absent, never cut short.
// Remove need not be durable. Tests replace it with a simulation that
// crashes.
type snapDir interface {
	// List returns the names of the files in the directory, sorted.
	List() ([]string, error)
	// Read returns a file's bytes.
	Read(name string) ([]byte, error)
	// Write creates or replaces a file, durably, atomically.
	Write(name string, data []byte) error
	// Remove removes a file.
	Remove(name string) error
}

// osDir is a snapDir on a real directory.
type osDir struct{ path string }

var _ snapDir = osDir{}

func (d osDir) List() ([]string, error) {
	des, err := os.ReadDir(d.path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	sort.Strings(out)
	return out, nil
}

func (d osDir) Read(name string) ([]byte, error) { return os.ReadFile(filepath.Join(d.path, name)) }

// Write writes a temporary file, fsyncs it, renames it into place and
// fsyncs the directory.
func (d osDir) Write(name string, data []byte) error {
	tmp := filepath.Join(d.path, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(d.path, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(d.path)
}

func (d osDir) Remove(name string) error { return os.Remove(filepath.Join(d.path, name)) }

func syncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// snapFile is a valid snapshot file.
type snapFile struct {
	name        string
	term, index uint64
}

// newestSnap is the newest valid snapshot file's content.
type newestSnap struct {
	name     string
	snap     *raftpb.Snapshot
	received bool
}

// loadSnapshots reads every snapshot file of dir, newest first, and
// returns the valid ones (oldest first), the newest valid snapshot (nil if
// none) and a warning wrapping ErrCorrupt for each file that is damaged.
// Leftover temporary files of interrupted writes are removed.
func loadSnapshots(dir snapDir) (valid []snapFile, newest *newestSnap, warnings []error, err error) {
	names, err := dir.List()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("raftlog: list snapshot files: %w", err)
	}
	var files []snapFile
	for _, name := range names {
		if strings.HasPrefix(name, snapPrefix) && strings.HasSuffix(name, snapSuffix+tmpSuffix) {
			dir.Remove(name) // a write that never finished; not needed
			continue
		}
		if term, index, ok := parseSnapName(name); ok {
			files = append(files, snapFile{name, term, index})
		}
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].index != files[j].index {
			return files[i].index < files[j].index
		}
		return files[i].term < files[j].term
	})
	for k := len(files) - 1; k >= 0; k-- {
		f := files[k]
		b, err := dir.Read(f.name)
		if err != nil {
			warnings = append(warnings, fmt.Errorf("%w: snapshot file %s unreadable, skipped: %w", ErrCorrupt, f.name, err))
			continue
		}
		snap, received, err := decodeSnapFile(f.name, b)
		if err != nil {
			warnings = append(warnings, fmt.Errorf("%w: snapshot file %s damaged, skipped: %w", ErrCorrupt, f.name, err))
			continue
		}
		if newest == nil {
			newest = &newestSnap{f.name, snap, received}
		}
		valid = append(valid, f)
	}
	for i, j := 0, len(valid)-1; i < j; i, j = i+1, j-1 {
		valid[i], valid[j] = valid[j], valid[i]
	}
	return valid, newest, warnings, nil
}
