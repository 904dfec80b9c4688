package raftlog

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Three etcd Raft nodes, in one process, each on its own Log: they
// bootstrap, replicate, snapshot and compact; nodes restart from their
// logs (Raft must accept what Open rebuilds: commit index, applied index,
// first index below the snapshot); a node that was down long enough is
// caught up by a snapshot from the leader (Save with a snapshot). At the
// end every node has applied the same entries.

// raftApp is a node's state machine: a hash chain of the applied data.
type raftApp struct {
	applied uint64
	hash    [32]byte
}

func (a *raftApp) snapshot() []byte {
	return binary.LittleEndian.AppendUint64(a.hash[:], a.applied)
}

func (a *raftApp) restore(b []byte) {
	copy(a.hash[:], b)
	a.applied = binary.LittleEndian.Uint64(b[32:])
}

type raftNode struct {
	id       uint64
	dir      string
	log      *Log
	rn       *raft.RawNode
	app      raftApp
	conf     *raftpb.ConfState
	snapped  uint64 // index of the last snapshot taken or received
	received int    // snapshots received from the leader
	up       bool
}

var raftOpts = Options{RegionSize: 64 << 10, SnapshotCatchUp: 5}

func (n *raftNode) start(t *testing.T) {
	t.Helper()
	l, err := Open(n.dir, raftOpts)
	if err != nil {
		t.Fatalf("node %d: %v", n.id, err)
	}
	n.log, n.app, n.conf = l, raftApp{}, &raftpb.ConfState{}
	snap, _ := l.Snapshot()
	if !raft.IsEmptySnap(snap) {
		n.app.restore(snap.GetData())
		n.conf = proto.Clone(snap.GetMetadata().GetConfState()).(*raftpb.ConfState)
		n.snapped = snap.GetMetadata().GetIndex()
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID: n.id, ElectionTick: 10, HeartbeatTick: 1, Storage: l, Applied: n.app.applied,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 64, Logger: discardLogger{},
	})
	if err != nil {
		t.Fatalf("node %d: %v", n.id, err)
	}
	if l.Empty() {
		if err := rn.Bootstrap([]raft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}); err != nil {
			t.Fatal(err)
		}
	}
	n.rn, n.up = rn, true
}

func (n *raftNode) stop(t *testing.T) {
	t.Helper()
	if err := n.log.Close(); err != nil {
		t.Fatal(err)
	}
	n.up = false
}

// ready handles every Ready and returns the messages to send.
func (n *raftNode) ready(t *testing.T) []*raftpb.Message {
	t.Helper()
	var out []*raftpb.Message
	for n.rn.HasReady() {
		rd := n.rn.Ready()
		if err := n.log.Save(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
			t.Fatalf("node %d: save: %v", n.id, err)
		}
		if !raft.IsEmptySnap(rd.Snapshot) {
			n.app.restore(rd.Snapshot.GetData())
			n.conf = proto.Clone(rd.Snapshot.GetMetadata().GetConfState()).(*raftpb.ConfState)
			n.snapped = rd.Snapshot.GetMetadata().GetIndex()
			n.received++
		}
		out = append(out, rd.Messages...)
		for _, e := range rd.CommittedEntries {
			if e.GetIndex() != n.app.applied+1 {
				t.Fatalf("node %d: entry %d to apply after %d", n.id, e.GetIndex(), n.app.applied)
			}
			switch e.GetType() {
			case raftpb.EntryNormal:
				if len(e.GetData()) > 0 {
					n.app.hash = sha256.Sum256(append(n.app.hash[:], e.GetData()...))
				}
			case raftpb.EntryConfChange:
				cc := &raftpb.ConfChange{}
				if err := proto.Unmarshal(e.GetData(), cc); err != nil {
					t.Fatal(err)
				}
				n.conf = n.rn.ApplyConfChange(cc)
			}
			n.app.applied = e.GetIndex()
		}
		n.rn.Advance(rd)
		if n.app.applied >= n.snapped+10 {
			if err := n.log.CreateSnapshot(n.app.applied, n.conf, n.app.snapshot()); err != nil {
				t.Fatalf("node %d: snapshot: %v", n.id, err)
			}
			n.snapped = n.app.applied
		}
	}
	return out
}

type raftCluster struct {
	t     *testing.T
	nodes []*raftNode
	queue []*raftpb.Message
}

// step ticks every node that is up, handles their Readies and delivers
// the messages between nodes that are up.
func (c *raftCluster) step() {
	for _, n := range c.nodes {
		if n.up {
			n.rn.Tick()
		}
	}
	for round := 0; round < 10; round++ {
		for _, n := range c.nodes {
			if n.up {
				c.queue = append(c.queue, n.ready(c.t)...)
			}
		}
		if len(c.queue) == 0 {
			return
		}
		q := c.queue
		c.queue = nil
		for _, m := range q {
			from, to := c.nodes[m.GetFrom()-1], c.nodes[m.GetTo()-1]
			if !from.up || !to.up {
				continue
			}
			if m.GetType() == raftpb.MsgSnap {
				from.rn.ReportSnapshot(to.id, raft.SnapshotFinish)
			}
			if err := to.rn.Step(m); err != nil {
				c.t.Fatalf("node %d: step: %v", to.id, err)
			}
		}
	}
}

func (c *raftCluster) leader() *raftNode {
	for _, n := range c.nodes {
		if n.up && n.rn.Status().RaftState == raft.StateLeader {
			return n
		}
	}
	return nil
}

// until steps until cond holds.
func (c *raftCluster) until(what string, cond func() bool) {
	c.t.Helper()
	for k := 0; k < 3000; k++ {
		if cond() {
			return
		}
		c.step()
	}
	c.t.Fatalf("never: %s", what)
}

// propose proposes n entries on the leader and waits until every node that
// is up has applied them.
func (c *raftCluster) propose(n int, tag string) {
	c.t.Helper()
	c.until("a leader", func() bool { return c.leader() != nil })
	for k := 0; k < n; k++ {
		l := c.leader()
		for l == nil {
			c.step()
			l = c.leader()
		}
		if err := l.rn.Propose([]byte(fmt.Sprintf("%s-%d", tag, k))); err != nil {
			c.t.Fatal(err)
		}
		c.step()
	}
	c.settle()
}

// settle steps until every node that is up has applied the same index,
// the leader's commit index.
func (c *raftCluster) settle() {
	c.t.Helper()
	c.until("all nodes applied the leader's log", func() bool {
		l := c.leader()
		if l == nil {
			return false
		}
		for _, n := range c.nodes {
			if n.up && n.app.applied != l.rn.Status().GetCommit() {
				return false
			}
		}
		return true
	})
}

func TestRaftNodes(t *testing.T) {
	base := fastDir(t) // Raft's behaviour is under test here, not the disk
	c := &raftCluster{t: t}
	for id := uint64(1); id <= 3; id++ {
		n := &raftNode{id: id, dir: filepath.Join(base, fmt.Sprint(id))}
		n.start(t)
		c.nodes = append(c.nodes, n)
	}
	c.propose(30, "a")

	// A follower goes down; the others go on far enough to compact the
	// log past it, and one of them restarts from its log meanwhile.
	lag := c.nodes[2]
	if c.leader() == lag {
		lag = c.nodes[0]
	}
	lag.stop(t)
	c.propose(40, "b")
	for _, n := range c.nodes {
		if n != lag && n != c.leader() {
			n.stop(t)
			n.start(t)
		}
	}
	c.propose(40, "c")
	if first, _ := c.leader().log.FirstIndex(); first <= lag.app.applied+1 {
		t.Fatalf("the leader's log starts at %d: the lagging node (applied %d) will not need a snapshot", first, lag.app.applied)
	}
	lag.start(t)
	c.propose(10, "d")
	if lag.received == 0 {
		t.Fatal("the lagging node did not receive a snapshot")
	}

	// Everyone restarts from the logs.
	for _, n := range c.nodes {
		n.stop(t)
	}
	for _, n := range c.nodes {
		n.start(t)
	}
	c.propose(10, "e")
	want := c.nodes[0].app
	for _, n := range c.nodes {
		if n.app != want {
			t.Fatalf("node %d applied %d (hash %x), node 1 %d (hash %x)", n.id, n.app.applied, n.app.hash[:4], want.applied, want.hash[:4])
		}
	}
	for _, n := range c.nodes {
		n.stop(t)
	}
	t.Logf("all nodes applied %d entries", want.applied)
}

// fastDir is a fresh directory on tmpfs if there is one: for tests of
// semantics, where fsync only costs time.
func fastDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "raftlogtest")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type discardLogger struct{}

func (discardLogger) Debug(...any)                   {}
func (discardLogger) Debugf(string, ...any)          {}
func (discardLogger) Error(...any)                   {}
func (discardLogger) Errorf(string, ...any)          {}
func (discardLogger) Info(...any)                    {}
func (discardLogger) Infof(string, ...any)           {}
func (discardLogger) Warning(...any)                 {}
func (discardLogger) Warningf(string, ...any)        {}
func (discardLogger) Fatal(v ...any)                 { panic(fmt.Sprint(v...)) }
func (discardLogger) Fatalf(format string, v ...any) { panic(fmt.Sprintf(format, v...)) }
func (discardLogger) Panic(v ...any)                 { panic(fmt.Sprint(v...)) }
func (discardLogger) Panicf(format string, v ...any) { panic(fmt.Sprintf(format, v...)) }
