package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/remote"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// Orphan copies. A stream deleted while a member holding one of its
// copies is down leaves that copy behind: its leader could not reach the
// member to delete it. Such a copy would go on serving reads of a deleted
// stream (copyread.go) and would refuse a later stream of the same name.
// It is set aside, out of DATA/replicas into DATA/orphans/NAME.TIME (no
// longer served nor in the way; kept, since a leader that lost its data
// directory also says it has none of its streams; deleting it is the
// operator's),
//   - when its leader joins (or this node does, seeing its leader join;
//     or its leader, restarted quickly, shows as updated):
//     the leader is asked, for its own streams only, and answers NotFound
//     (sweepOrphans);
//   - when a leader asks to create a copy of that name and the copy's own
//     leader answers NotFound, or is that leader itself with a stream of
//     another id: a leader has one stream of a name (orphan).
// A leader that is down, or answers anything else, keeps its copies.

// orphanAttempts bounds how often a joined leader is asked before its
// copies are left alone until it joins again: a member joins the gossip
// before it serves clients.
const orphanAttempts = 6

// sweepOrphans sets aside, in the background, the copies this node holds
// for member (at client address addr) of streams member says it does not
// have.
func (s *Server) sweepOrphans(member, addr string) {
	type held struct {
		name  string
		opens uint64
	}
	var copies []held
	for _, n := range s.replicas.list() {
		if l, opens, err := s.replicas.leaderOpens(n); err == nil && l == member {
			copies = append(copies, held{n, opens})
		}
	}
	if len(copies) == 0 || s.enter() != nil {
		return
	}
	go func() {
		defer s.leave() // Shutdown waits; it ends stopCtx first
		for _, h := range copies {
			n := h.name
			gone := false
			for attempt := range orphanAttempts {
				g, err := s.streamGone(addr, n)
				if err == nil {
					gone = g
					break
				}
				select {
				case <-s.stopCtx.Done():
					return
				case <-time.After(time.Duration(attempt+1) * 250 * time.Millisecond):
				}
			}
			if !gone {
				continue
			}
			// Not if a leader opened it meanwhile: member may have made
			// the stream anew since it answered (a new copy, orphan).
			to, err := s.replicas.setAsideIfLeader(n, member, h.opens)
			switch {
			case err != nil:
				s.log.Warn("cannot set an orphan copy aside", "stream", n, "leader", member, "err", err)
			case to != "":
				s.log.Warn("orphan copy set aside", "stream", n, "kept_at", to, "why", fmt.Sprintf("its leader %s says it has no stream %s", member, n))
			}
		}
	}()
}

// streamGone asks the member at addr, for its own streams only, whether
// it has stream: true when it answers NotFound, false when it answers
// with the stream's status, an error for any other answer or none within
// lookupTimeout.
func (s *Server) streamGone(addr, stream string) (bool, error) {
	c, err := s.peerStreams(addr)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(s.stopCtx, lookupTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, localOnlyKey, "1")
	_, err = c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: stream})
	switch status.Code(err) {
	case codes.OK:
		return false, nil
	case codes.NotFound:
		return true, nil
	}
	return false, err
}

// orphan says why the copy of req's stream this node holds is of a
// stream that no longer exists, so that req's leader, creating its copy,
// may replace it; "" when it may still be in use. fs and err are what
// opening the copy for req's leader gave.
func (s *Server) orphan(req *remotepb.OpenRequest, fs *remote.FileStore, err error) string {
	switch {
	case err == nil:
		if req.StreamId == 0 {
			return ""
		}
		sid, serr := local.StreamIDOf(fs.Memory().Bytes())
		if serr != nil || sid == 0 || sid == req.StreamId {
			return ""
		}
		return fmt.Sprintf("its leader %s now leads a stream of that name with id %x; the copy is of id %x", req.Leader, req.StreamId, sid)
	case errors.Is(err, ErrWrongLeader):
		old, lerr := s.replicas.leader(req.Stream)
		c := s.cluster()
		if lerr != nil || old == req.Leader || c == nil {
			return ""
		}
		addr := ""
		for _, m := range c.Members() {
			if m.Name == old && m.State.Live() && m.ClientAddr != "" {
				addr = m.ClientAddr
			}
		}
		if addr == "" {
			return ""
		}
		if gone, err := s.streamGone(addr, req.Stream); err != nil || !gone {
			return ""
		}
		return fmt.Sprintf("its leader %s says it has no stream %s; %s leads a new one", old, req.Stream, req.Leader)
	}
	return ""
}

// copyOf checks a leader's local-only DeleteStream of stream's copy
// against the copy it names (copyOfKey: "LEADER/STREAMID"), if it names
// one: the copy must be that leader's, of that stream id (or have none
// yet). A retried delete thus never deletes the copy of a stream made
// anew under the name.
func (s *Server) copyOf(ctx context.Context, stream string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(copyOfKey)
	if len(v) == 0 {
		return nil
	}
	leader, idHex, ok := strings.Cut(v[0], "/")
	id, err := strconv.ParseUint(idHex, 16, 64)
	if !ok || err != nil {
		return fmt.Errorf("node: malformed %s %q", copyOfKey, v[0])
	}
	l, err := s.replicas.leader(stream)
	if err != nil {
		return err
	}
	if l != leader {
		return fmt.Errorf("node: the copy of %s here is %s's, not %s's", stream, l, leader)
	}
	path, _, err := s.replicas.copyFile(stream)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer f.Close()
	sb := make([]byte, remote.SuperblockSize)
	if _, err := io.ReadFull(f, sb); err != nil {
		return nil // no superblock yet: nothing written, nothing to keep
	}
	if sid, err := local.StreamIDOf(sb); err == nil && sid != 0 && sid != id {
		return fmt.Errorf("node: the copy of %s here is of stream id %x, not %x", stream, sid, id)
	}
	return nil
}
