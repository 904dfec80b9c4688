package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/remote"
)

// Restore, the data path: the catalog's RestoreStream names a stream's
// new leader, under a new epoch, and the copy to rebuild it from
// (Stream.restoring). Before its takeover (openLed) the new leader pulls
// that copy's file from its holder (FetchCopy, a stream of the file's
// non-zero chunks over gRPC, then its size and SHA-256), and checks it
// end to end before it adopts it as its stream's files:
//
//  1. the SHA-256 of the file as written here, read back from disk,
//     equals the holder's of its file as read there;
//  2. the file is a stream file of the stream's id;
//  3. every entry, from the head to the end recovery finds, passes its
//     checksum (written by the leader that appended it, over the entry,
//     its region's sequence number and epoch).
//
// Only then is the file linked under streams/NAME (adoptInto: in one
// place at least whatever the crash) with meta.json's RestoredEpoch, and
// the takeover goes on as for a promoted copy: fence and survey the new
// copies, a new region under the new epoch and its marker, replication
// to the new copies. The restore is done when the marker is committed
// (EpochStarted clears Stream.restoring); until then the source's holder
// keeps its copy, placed or not (stale).
//
// The holder fences its copy first: its Target is closed (a live old
// leader's connections with it) or, for files it leads, the stream is
// closed; the catalog names another leader now, so neither comes back.

// fetchChunk is the size of FetchCopy's chunks.
const fetchChunk = 1 << 20

// restoreFetchTimeout bounds a fetch of a copy.
const restoreFetchTimeout = 10 * time.Minute

// errRestore says a restore's fetch failed: the stream is unavailable
// until a fetch succeeds (reconcile tries again) or another restore
// chooses another source.
var errRestore = errors.New("node: restore cannot complete")

// restoreService is the Restores gRPC service of a Server.
type restoreService struct {
	api.UnimplementedRestoresServer
	s *Server
}

var _ api.RestoresServer = (*restoreService)(nil)

// heldFile is the file of stream name (id) this node holds: its copy
// for another leader, or else the files it leads; "" if neither.
func (s *Server) heldFile(name string, id uint64) (path string, isCopy bool) {
	if got, err := s.replicas.streamID(name); err == nil && got == id {
		p, _, err := s.replicas.copyFile(name)
		if err == nil {
			return p, true
		}
	}
	if m, err := s.store.readMeta(name); err == nil && m.StreamID == id {
		return filepath.Join(s.store.path(name), streamFile), false
	}
	return "", false
}

// ProbeCopy describes this node's copy (or files) of a stream, read-only.
func (r *restoreService) ProbeCopy(ctx context.Context, req *api.ProbeCopyRequest) (*api.ProbeCopyResponse, error) {
	s := r.s
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if err := validName(req.Stream); err != nil {
		return nil, statusOf(err)
	}
	return s.probeHeld(req.Stream, req.StreamId)
}

func (s *Server) probeHeld(name string, id uint64) (*api.ProbeCopyResponse, error) {
	resp := &api.ProbeCopyResponse{Backup: s.cfg.Backup}
	if s.cfg.Catalog != nil {
		resp.Incarnation = s.cfg.Catalog.Incarnation()
	}
	path, _ := s.heldFile(name, id)
	if path == "" {
		return resp, nil
	}
	t, err := scanHeld(path)
	if err != nil {
		return nil, statusOf(fmt.Errorf("node: reading %s's copy of %s: %w", s.cfg.Name, name, err))
	}
	resp.Held = true
	resp.Epoch, resp.Seq, resp.Off, resp.Index, resp.Committed = t.epoch, t.seq, t.off, t.index, t.committed
	return resp, nil
}

// scanHeld reads the durable tail of the stream file (or copy) at path,
// read-only.
func scanHeld(path string) (copyTail, error) {
	f, err := os.Open(path)
	if err != nil {
		return copyTail{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return copyTail{}, err
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return copyTail{}, fmt.Errorf("mapping %s: %w", path, err)
	}
	defer unix.Munmap(b)
	sc, err := local.ScanCopy(b)
	if err != nil {
		return copyTail{}, err
	}
	t := copyTail{index: sc.Next, committed: sc.Committed()}
	if n := len(sc.Regions); n > 0 {
		last := sc.Regions[n-1]
		t.epoch, t.seq, t.off = last.Epoch, last.Seq, uint64(last.End)
	}
	return t, nil
}

// FetchCopy sends this node's copy of a stream to the leader the catalog
// names for its restore from this node.
func (r *restoreService) FetchCopy(req *api.FetchCopyRequest, call api.Restores_FetchCopyServer) error {
	s := r.s
	if err := s.enter(); err != nil {
		return statusOf(err)
	}
	defer s.leave()
	if s.cfg.Catalog == nil {
		return status.Errorf(codes.FailedPrecondition, "node %s runs alone, without a catalog", s.cfg.Name)
	}
	if err := validName(req.Stream); err != nil {
		return statusOf(err)
	}
	check := func() error {
		rec, ok := s.cfg.Catalog.Stream(req.Stream)
		switch {
		case !ok || !catalog.Live(rec.State) || rec.Id != req.StreamId:
			return fmt.Errorf("%w: %s (id %d)", ErrNoStream, req.Stream, req.StreamId)
		case rec.Restoring == nil || rec.Restoring.Node != s.cfg.Name || rec.Restoring.Incarnation != s.cfg.Catalog.Incarnation() ||
			rec.Leader != req.Leader || rec.Epoch != req.Epoch || rec.Restoring.Epoch != req.Epoch:
			return status.Errorf(codes.FailedPrecondition, "the catalog names no restore of %s from %s to %s under epoch %d (leader %s, epoch %d, restoring %v)",
				req.Stream, s.cfg.Name, req.Leader, req.Epoch, rec.Leader, rec.Epoch, rec.Restoring)
		}
		return nil
	}
	if err := check(); err != nil {
		ctx, cancel := context.WithTimeout(call.Context(), lookupTimeout)
		berr := s.cfg.Catalog.Barrier(ctx)
		cancel()
		if berr != nil {
			return statusOf(berr)
		}
		if err := check(); err != nil {
			return statusOf(err)
		}
	}
	// The copy is fenced and kept still while it is read: no promotion,
	// demotion or removal (moveMu), no writer (its Target closed, or the
	// stream closed if this node led it).
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	path, isCopy := s.heldFile(req.Stream, req.StreamId)
	if path == "" {
		return status.Errorf(codes.NotFound, "%s holds no copy of %s (id %d)", s.cfg.Name, req.Stream, req.StreamId)
	}
	if isCopy && s.hub != nil {
		if err := s.hub.Drop(req.Stream); err != nil && !errors.Is(err, remote.ErrNoStream) {
			return statusOf(err)
		}
	}
	if !isCopy {
		s.closeLed(req.Stream, fmt.Errorf("%w: %s is being restored on %s", errNotHere, req.Stream, req.Leader))
	}
	f, err := os.Open(path)
	if err != nil {
		return statusOf(fmt.Errorf("node: %w", err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return statusOf(fmt.Errorf("node: %w", err))
	}
	size := fi.Size()
	h := sha256.New()
	buf := make([]byte, fetchChunk)
	var sent int64
	for off := int64(0); off < size; off += fetchChunk {
		n, err := f.ReadAt(buf[:min(fetchChunk, size-off)], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return statusOf(fmt.Errorf("node: reading %s: %w", path, err))
		}
		h.Write(buf[:n])
		if allZeroBytes(buf[:n]) {
			continue
		}
		if err := call.Send(&api.FetchCopyChunk{Offset: uint64(off), Data: buf[:n]}); err != nil {
			return err
		}
		sent += int64(n)
	}
	s.log.Info("restore: copy sent to the stream's new leader", "stream", req.Stream, "leader", req.Leader, "epoch", req.Epoch, "size", size, "sent", sent)
	return call.Send(&api.FetchCopyChunk{Last: true, Size: uint64(size), Sha256: h.Sum(nil)})
}

func allZeroBytes(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// restoredHere says whether this node, the leader of rec being restored
// from another node's copy, holds the fetched copy as its files already
// (a fetch completed before a restart).
func (s *Server) restoredHere(rec *pb.Stream) bool {
	m, err := s.store.readMeta(rec.Name)
	return err == nil && m.StreamID == rec.Id && m.RestoredEpoch == rec.Restoring.Epoch
}

// fetchRestore makes the files of stream rec, which this node leads by a
// restore from another node's copy, from that copy (see the top).
func (s *Server) fetchRestore(rec *pb.Stream) error {
	src := rec.Restoring
	if s.restoredHere(rec) {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.stopCtx, restoreFetchTimeout)
	defer cancel()
	addr, live := s.memberAddr(src.Node)
	if !live {
		return fmt.Errorf("%w: %s: the source %s is not live (last at %s)", errRestore, rec.Name, src.Node, orUnknown(addr))
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize)))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errRestore, rec.Name, err)
	}
	defer cc.Close()
	call, err := api.NewRestoresClient(cc).FetchCopy(ctx, &api.FetchCopyRequest{Stream: rec.Name, StreamId: rec.Id, Leader: s.cfg.Name, Epoch: src.Epoch})
	if err != nil {
		return fmt.Errorf("%w: %s: fetching %s's copy: %v", errRestore, rec.Name, src.Node, err)
	}
	tmp := filepath.Join(s.store.dir, hiddenName(rec.Name, "restore"))
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer os.RemoveAll(tmp)
	path := filepath.Join(tmp, streamFile)
	start := time.Now()
	size, sum, err := receiveCopy(call, path)
	if err != nil {
		return fmt.Errorf("%w: %s: fetching %s's copy: %v", errRestore, rec.Name, src.Node, err)
	}
	entries, err := verifyImage(path, rec.Id)
	if err != nil {
		return fmt.Errorf("%w: %s: %s's copy fails its checks: %w", errRestore, rec.Name, src.Node, err)
	}
	// Files of the stream this node held before (it led it once, or held
	// a copy that is superseded) make way for the restored ones.
	if _, err := s.store.readMeta(rec.Name); err == nil {
		s.closeLed(rec.Name, fmt.Errorf("%w: %s is being restored", errTakeover, rec.Name))
		if err := s.store.remove(rec.Name); err != nil && !errors.Is(err, ErrNoStream) {
			return err
		}
	}
	m := meta{Replicas: rec.Replicas, Acks: catalog.AcksName(rec.Acks), RegionSize: int(rec.RegionSize),
		Created: time.Unix(0, rec.Created).UTC(), Envelope: true, StreamID: rec.Id, RestoredEpoch: src.Epoch}
	if err := s.store.adopt(rec.Name, m, path); err != nil {
		return err
	}
	s.log.Info("restore: copy fetched and verified; this node leads the stream now", "stream", rec.Name, "from", src.Node,
		"epoch", src.Epoch, "size", size, "entries", entries, "sha256", fmt.Sprintf("%x", sum[:8]), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// receiveCopy writes the chunks of call into a new file at path, durably,
// and checks the file as written against the sender's size and SHA-256.
func receiveCopy(call api.Restores_FetchCopyClient, path string) (int64, []byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	for {
		c, err := call.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the copy ended before its last chunk")
			}
			return 0, nil, err
		}
		if c.Last {
			if c.Size > 1<<46 {
				return 0, nil, fmt.Errorf("size %d is not a stream file's", c.Size)
			}
			if err := f.Truncate(int64(c.Size)); err != nil {
				return 0, nil, err
			}
			if err := f.Sync(); err != nil {
				return 0, nil, err
			}
			// Read back what is on disk: the check covers the write too.
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(f, 0, int64(c.Size))); err != nil {
				return 0, nil, err
			}
			sum := h.Sum(nil)
			if !bytes.Equal(sum, c.Sha256) {
				return 0, nil, fmt.Errorf("%w: SHA-256 of the copy received %x, sent %x", local.ErrCorrupt, sum, c.Sha256)
			}
			return int64(c.Size), sum, nil
		}
		if _, err := f.WriteAt(c.Data, int64(c.Offset)); err != nil {
			return 0, nil, err
		}
	}
}

// verifyImage checks the stream file at path as the restore's new
// leader adopts it: a stream file of stream id, whose every entry up to
// the end recovery finds passes its checksum. A last region left sealed
// (its successor was never written to the copy) is opened, as a
// takeover's promotion does. It returns the number of entries read.
func verifyImage(path string, id uint64) (uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() == 0 {
		return 0, fmt.Errorf("%w: the copy is empty (never written)", local.ErrCorrupt)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("mapping %s: %w", path, err)
	}
	defer unix.Munmap(b)
	if got, err := local.StreamIDOf(b); err != nil {
		return 0, err
	} else if got != id {
		return 0, fmt.Errorf("%w: the copy is of stream id %d, not %d", local.ErrCorrupt, got, id)
	}
	sc, err := local.Scan(b)
	if err != nil {
		off, sealed := local.SealedTail(b)
		if !sealed {
			return 0, err
		}
		binary.LittleEndian.PutUint64(b[off+local.RegionSealOffset:], 0)
		if err := unix.Msync(b, unix.MS_SYNC); err != nil {
			return 0, err
		}
		if sc, err = local.Scan(b); err != nil {
			return 0, err
		}
	}
	ls, err := local.OpenReader(path, local.Options{})
	if err != nil {
		return 0, err
	}
	defer ls.Close()
	head := ls.Head()
	it := ls.Iterator(head)
	var n uint64
	for it.Next() {
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("entry %d: %w", head+n, err)
	}
	if head+n != sc.Next {
		return n, fmt.Errorf("%w: %d entries read from %d, recovery finds the log ending at %d", local.ErrCorrupt, n, head, sc.Next)
	}
	return n, nil
}
