package replicate

import (
	"context"
	"errors"
	"fmt"

	"github.com/rpstream/rpstream/rdma"
)

// Fetch reads up to len(dst) bytes at offset off of live region seq from
// the replicas, one-sided (rdma Read from the replica's slot, which holds
// the same bytes as the leader's: replication writes every byte at the
// same offset of the same slot). It is how a leader repairs its own
// damaged bytes from a good copy. Each connected replica that holds
// bytes of the range durably is read in turn, as much of the range as it
// acknowledged, until check accepts what was read; Fetch then returns
// that replica and how many bytes of dst hold what it read. Only
// acknowledged bytes are read, which the loop never writes again.
func (l *Leader) Fetch(ctx context.Context, seq uint64, off int, dst []byte, check func([]byte) error) (ID, int, error) {
	if off < 0 || len(dst) == 0 || off+len(dst) > l.s.RegionSize() {
		return "", 0, fmt.Errorf("%w: fetch of [%d, %d) of a region of %d bytes", ErrConfig, off, off+len(dst), l.s.RegionSize())
	}
	type source struct {
		id   ID
		conn rdma.Conn
		desc rdma.Descriptor
		n    int // bytes of the range it acknowledged
	}
	var sources []source
	err := l.do(func() error {
		slot, ok := l.slots[seq]
		if !ok {
			return fmt.Errorf("%w: region %d is not live here", ErrNoRegion, seq)
		}
		for _, p := range l.rep.Progress() {
			if !(Pos{Seq: seq, Off: off}).Less(p.Acked) {
				continue
			}
			n := len(dst)
			if p.Acked.Seq == seq {
				n = min(n, p.Acked.Off-off)
			}
			lk := l.links[p.ID]
			if lk == nil || lk.c == nil {
				continue
			}
			if d, ok := lk.c.descs[slot]; ok {
				sources = append(sources, source{p.ID, lk.c.conn, d, n})
			}
		}
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	if len(sources) == 0 {
		return "", 0, fmt.Errorf("%w: no connected replica holds bytes of region %d past offset %d", ErrNoSource, seq, off)
	}
	buf, err := rdma.Alloc(len(dst))
	if err != nil {
		return "", 0, err
	}
	defer buf.Free()
	mr, err := l.peer.Register(buf.Bytes(), rdma.UsageReadDst, nil)
	if err != nil {
		return "", 0, err
	}
	defer mr.Deregister()
	var errs []error
	for _, s := range sources {
		if err := s.conn.Read(mr, 0, s.desc, off, s.n).Wait(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.id, err))
			continue
		}
		copy(dst, buf.Bytes()[:s.n])
		if err := check(dst[:s.n]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.id, err))
			continue
		}
		return s.id, s.n, nil
	}
	return "", 0, fmt.Errorf("%w: region %d [%d, %d): %w", ErrNoSource, seq, off, off+len(dst), errors.Join(errs...))
}

// ErrNoSource says no replica could give the bytes asked for whole.
var ErrNoSource = errors.New("replicate: no good copy of the bytes")
