package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/local"
)

// Reads from a copy: a node that holds a copy of a stream another member
// leads answers Read and Tail from that copy (local.OpenCopy), up to what
// the copy's commit words say is committed, instead of sending the client
// to the leader. The words are written lazily by the leader, so a copy may
// lag the leader's commit point: a client that must read its own appends
// reads from the leader.

// copyTailCheck is how often a tail of a copy that is not moving checks
// that the copy still exists (the leader may delete the stream).
const copyTailCheck = time.Second

// entryIterator is what readBatch needs of local.Iterator and
// local.CopyIterator.
type entryIterator interface {
	Next() bool
	Entry() local.Entry
	Err() error
	Pos() uint64
}

// readableCopy opens this node's copy of stream for reading when err, the
// error of acquiring stream, says this node does not lead it and the node
// holds a copy. Each call maps the copy anew and its caller closes it.
func (s *Server) readableCopy(stream string, err error) (*local.Copy, bool) {
	if !errors.Is(err, ErrNoStream) && !errors.Is(err, errNotHere) || !s.replicas.has(stream) {
		return nil, false
	}
	path, maxSize, err := s.replicas.copyFile(stream)
	if err != nil {
		return nil, false
	}
	cp, err := local.OpenCopy(path, maxSize)
	if err != nil {
		// Not written yet (its file is made by the leader's first
		// connection), or unreadable: the leader answers instead.
		return nil, false
	}
	return cp, true
}

// readCopy answers a Read from the copy cp, which it closes.
func readCopy(cp *local.Copy, req *api.ReadRequest, maxEntries, maxBytes int) (*api.ReadResponse, error) {
	defer cp.Close()
	it := cp.Iterator(req.From)
	r := newEntryReader(it, req.From, true)
	ents, err := r.read(^uint64(0), maxEntries, maxBytes)
	if err != nil {
		return nil, statusOf(err)
	}
	// Committed is looked at after the read: it covers every entry read.
	return &api.ReadResponse{Entries: ents, Next: r.next(), Committed: max(cp.Committed(), it.Pos()), Head: cp.Head()}, nil
}

// tailCopy answers a Tail from the copy cp, which it closes, following
// the copy as the leader writes it (polling its commit words) until the
// call ends, the server shuts down or the copy is deleted.
func (s *Server) tailCopy(req *api.TailRequest, call api.Streams_TailServer, cp *local.Copy) error {
	defer cp.Close()
	ctx, cancel := context.WithCancel(call.Context())
	defer cancel()
	defer context.AfterFunc(s.stopCtx, cancel)()
	from := req.From
	if req.FromEnd {
		from = cp.Committed()
	}
	it := cp.Iterator(from)
	r := newEntryReader(it, from, true)
	for {
		batch, err := r.read(^uint64(0), maxReadEntries, maxReadBytes)
		if err != nil {
			return statusOf(err)
		}
		if len(batch) > 0 {
			if err := call.Send(&api.TailResponse{Entries: batch}); err != nil {
				return err
			}
			continue
		}
		wctx, wcancel := context.WithTimeout(ctx, copyTailCheck)
		err = it.Wait(wctx)
		wcancel()
		switch {
		case err == nil:
		case s.stopCtx.Err() != nil:
			return statusOf(ErrClosing)
		case ctx.Err() != nil:
			return statusOf(ctx.Err())
		case errors.Is(err, context.DeadlineExceeded):
			if !s.replicas.has(req.Stream) {
				return statusOf(fmt.Errorf("%w: %s deleted", ErrNoStream, req.Stream))
			}
		default:
			return statusOf(err)
		}
	}
}
