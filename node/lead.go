package node

import (
	"context"
	"fmt"
	"slices"

	"github.com/rpstream/rpstream/cluster"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/remote"
	"github.com/rpstream/rpstream/remote/remotepb"
	"github.com/rpstream/rpstream/replicate"
	"github.com/rpstream/rpstream/replicate/quorum"
)

// A replicated stream (meta.Followers or meta.Backup set) is led by the
// node that created it. Each time it opens the stream it takes the next
// epoch, durably in meta.json, before any replica is written, so that the
// copies' targets refuse every writer of an older incarnation; it then
// starts a replicate.Leader, which writes each committed entry into every
// copy over rdma, and appends are answered once the policy's copies hold
// them durably.

// replicaMinBatch is the Replicator's MinBatch: small appends from many
// clients that arrive while a write to a copy is in flight go out
// together once it completes, so that independent clients share the
// replication's writes, acknowledgements and wake-ups as they share the
// group commit.
const replicaMinBatch = 64 << 10

// replicaMaxBatch and replicaMaxInflight bound the writes to a copy that
// keeps up: 8 of at most 256 KiB (2 MiB) rather than replicate's default 4
// of 1 MiB. Acknowledgements then come every 256 KiB, so the entries at the
// front of a batch are not held until a megabyte behind them has arrived
// and been flushed: 64 clients of 64 KiB entries had their p99 halved
// (alternated runs, see docs/design-notes.md), at the same throughput.
const (
	replicaMaxBatch    = 256 << 10
	replicaMaxInflight = 8
)

// replicatorConfig is the replication of a stream with acks, its entries
// before floor committed and its epoch starting at epochStart.
func replicatorConfig(acks string, floor, epochStart uint64) replicate.Config {
	return replicate.Config{Policy: policy(acks), Floor: floor, EpochStart: epochStart,
		MinBatch: replicaMinBatch, MaxBatch: replicaMaxBatch, MaxInflight: replicaMaxInflight}
}

// policy is meta.Acks as a quorum policy.
func policy(acks string) quorum.Policy {
	switch acks {
	case "leader":
		return quorum.LeaderOnly
	case "all":
		return quorum.All
	}
	return quorum.Majority
}

// peerAddrOf is member name's peer address: from the membership if it is
// known there, else the one recorded at creation.
func (s *Server) peerAddrOf(name string, m meta) string {
	if c := s.cluster(); c != nil {
		for _, mb := range c.Members() {
			if mb.Name == name && mb.PeerAddr != "" {
				return mb.PeerAddr
			}
		}
	}
	return m.Peers[name]
}

// startLeader starts replicating stream name, open as ls under m.Epoch:
// entries before floor are committed; past it, the commit point moves
// only beyond epochStart (the epoch marker's index; see takeover.go).
func (s *Server) startLeader(name string, m meta, ls *local.Stream, floor, epochStart uint64) (*replicate.Leader, error) {
	if s.cfg.Provider == nil {
		return nil, fmt.Errorf("node: stream %s has copies on other members but this node has no rdma provider (Config.PeerAddr)", name)
	}
	var reps []replicate.ReplicaAddr
	for _, f := range m.Followers {
		reps = append(reps, replicate.ReplicaAddr{ID: replicate.ID(f), Addr: s.peerAddrOf(f, m)})
	}
	if m.Backup != "" {
		reps = append(reps, replicate.ReplicaAddr{ID: replicate.ID(m.Backup), Addr: s.peerAddrOf(m.Backup, m), Backup: true})
	}
	shared, err := s.sharedPeer()
	if err != nil {
		return nil, err
	}
	regionSize, streamID := uint64(ls.RegionSize()), ls.StreamID()
	cfg := replicate.LeaderConfig{
		Shared:     shared,
		Stream:     ls,
		Writer:     s.cfg.Name,
		Epoch:      m.Epoch,
		Replicator: replicatorConfig(m.Acks, floor, epochStart),
		Provider:   s.cfg.Provider,
		RDMA:       s.cfg.RDMA,
		Replicas:   reps,
		OnConnect: func(ctx context.Context, id replicate.ID, c *remote.Client) error {
			_, err := c.Open(ctx, &remotepb.OpenRequest{Stream: name, RegionSize: regionSize, StreamId: streamID, Create: true, Leader: s.cfg.Name})
			return err
		},
		ConnectPos: func(ctx context.Context, id replicate.ID, c *remote.Client, epoch uint64, end replicate.Pos, index uint64, runs []replicate.EpochRun) (replicate.Pos, error) {
			q := &remotepb.TailRequest{Epoch: epoch, LeaderSeq: end.Seq, LeaderOff: uint64(end.Off), LeaderIndex: &index}
			for _, r := range runs {
				q.Runs = append(q.Runs, &remotepb.EpochRun{Epoch: r.Epoch, FirstSeq: r.FirstSeq, LastSeq: r.LastSeq, LastEnd: uint64(r.LastEnd)})
			}
			if len(q.Runs) > 0 {
				q.LeaderIndex = nil
			}
			r, err := c.Tail(ctx, q)
			if err != nil {
				return replicate.Pos{}, err
			}
			return replicate.Pos{Seq: r.Seq, Off: int(r.Off)}, nil
		},
		Logger: s.cfg.Logger.With("stream", name),
		// Copies give the storage of trimmed regions back.
		Discard: true,
	}
	if s.metrics != nil {
		cfg.Counters = &s.metrics.rdma
	}
	// Not stopCtx: appends in flight at Shutdown drain before Close.
	return replicate.StartLeader(context.Background(), cfg)
}

// MemberChanged tells the node of a membership event: a member holding
// copies that comes back is reconnected at once by the leaders writing
// to it. Call it from cluster.Config.OnChange.
func (s *Server) MemberChanged(ev cluster.Event) {
	// A member restarted before the others saw it die shows as an update
	// (a new incarnation), not a join: the leaders writing to it reconnect at once rather than
	// after their retry backoff (a needless reconnect costs one
	// connection setup). An update that changes only the member's
	// capacity (spread whenever its free space moves by 1 %) is not one:
	// thousands of leaders all reconnecting to it at once, for nothing,
	// starved the catalog's controller into a new election in the
	// 10,000-stream runs. (A restart that changes nothing else is then
	// noticed by its broken connections, and retried after the backoff.)
	if !s.memberRestarted(ev) {
		return
	}
	s.mu.Lock()
	var leaders []*replicate.Leader
	for _, st := range s.streams {
		if st.leader != nil && (st.meta.Backup == ev.Member.Name || slices.Contains(st.meta.Followers, ev.Member.Name)) {
			leaders = append(leaders, st.leader)
		}
	}
	s.mu.Unlock()
	for _, l := range leaders {
		l.Restarted(replicate.ID(ev.Member.Name))
	}
}

// memberRestarted records ev's member's metadata and says whether ev
// may be the member coming back (a join, or an update that changes more
// than its capacity), for which the leaders writing to it reconnect.
func (s *Server) memberRestarted(ev cluster.Event) bool {
	if ev.Kind != cluster.EventJoin && (ev.Kind != cluster.EventUpdate || ev.Member.Leaving) {
		return false
	}
	s.mu.Lock()
	prev, known := s.members[ev.Member.Name]
	if s.members == nil {
		s.members = map[string]cluster.Meta{}
	}
	s.members[ev.Member.Name] = ev.Member.Meta
	s.mu.Unlock()
	return ev.Kind == cluster.EventJoin || !known || !capacityOnly(prev, ev.Member.Meta)
}

// capacityOnly says whether b differs from a in its capacity alone.
func capacityOnly(a, b cluster.Meta) bool {
	a.Capacity = b.Capacity
	return a == b
}
