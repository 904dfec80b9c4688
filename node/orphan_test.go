package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/remote"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// TestCreateNameLedElsewhere: a stream name another member leads cannot
// be created again on a node that holds no copy of it (replicas 1: no
// member holds one), so that two leaders never serve streams of one name.
func TestCreateNameLedElsewhere(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	c1, err := client.Dial(nodes[0].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if _, err := c1.Create(ctx, "once", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c2, err := client.Dial(nodes[1].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, err = c2.Create(ctx, "once", client.CreateOptions{})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("create at n2 of a stream n1 leads: %v, want AlreadyExists", err)
	}
	// n2 holds nothing of it, and n1 still leads it.
	if names, err := nodes[1].srv.store.list(); err != nil || len(names) != 0 {
		t.Fatalf("n2's own streams: %v, %v", names, err)
	}
	if st, err := c2.Status(ctx, "once"); err != nil || st.Leader != "n1" {
		t.Fatalf("status: %v, %v", st, err)
	}
	// Once deleted, the name is free anywhere.
	if err := c1.Delete(ctx, "once"); err != nil {
		t.Fatal(err)
	}
	if st, err := c2.Create(ctx, "once", client.CreateOptions{}); err != nil || st.Leader != "n2" {
		t.Fatalf("create at n2 after the delete: %v, %v", st, err)
	}
}

// TestOrphanCopyReplacedOnCreate: a leader's creating Open replaces the
// copy a node holds of that name only when it is an orphan: made for
// another leader that answers it has no such stream, or for the same
// leader with another stream id. A copy whose leader has the stream is
// refused to any other leader, and kept.
func TestOrphanCopyReplacedOnCreate(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	createAtN1(t, ctx, nodes, "s")
	n2 := nodes[1].srv
	const rs = 64 << 10
	open := func(stream, leader string, id uint64) error {
		fs, err := n2.openCopy(&remotepb.OpenRequest{Stream: stream, Leader: leader, RegionSize: rs, StreamId: id, Create: true})
		if err == nil {
			fs.(io.Closer).Close()
		}
		return err
	}
	leaderOf := func(stream string) string {
		l, err := n2.replicas.leader(stream)
		if err != nil {
			t.Fatalf("copy of %s: %v", stream, err)
		}
		return l
	}

	// n1 has s: n3 cannot take n2's copy of it.
	if err := open("s", "n3", 0); !errors.Is(err, remote.ErrMismatch) {
		t.Fatalf("n3 opening n2's copy of n1's live stream: %v, want ErrMismatch", err)
	}
	if l := leaderOf("s"); l != "n1" {
		t.Fatalf("n2's copy of s is for %s now", l)
	}

	// A copy for n1 of a stream n1 does not have is replaced for n3.
	if err := open("t", "n1", 0); err != nil {
		t.Fatal(err)
	}
	if err := open("t", "n3", 0); err != nil {
		t.Fatalf("n3 creating t, n1's copy of which is an orphan: %v", err)
	}
	if l := leaderOf("t"); l != "n3" {
		t.Fatalf("n2's copy of t is for %s, want n3", l)
	}

	// n1's copy of s with another stream id than n1's s: n1 deleted and
	// made s again; the copy is replaced by an empty one.
	path, _, err := n2.replicas.copyFile("s")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sid, err := local.StreamIDOf(b)
	if err != nil || sid == 0 {
		t.Fatalf("n2's copy of s has no stream id: %x, %v", sid, err)
	}
	if err := open("s", "n1", sid+1); err != nil {
		t.Fatalf("n1 opening s with a new stream id: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	} else if id, err := local.StreamIDOf(b); err == nil && id == sid {
		t.Fatalf("n2's copy of s still holds stream %x", sid)
	}
}

// TestSweepOrphans: asked about the copies it holds for n1, n2 sets aside
// the ones of streams n1 does not have and keeps the one of a stream n1
// leads; a copy opened again after it was looked at is not removed.
func TestSweepOrphans(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	c := createAtN1(t, ctx, nodes, "s")
	n2 := nodes[1].srv
	for _, name := range []string{"t", "u"} {
		fs, err := n2.openCopy(&remotepb.OpenRequest{Stream: name, Leader: "n1", RegionSize: 64 << 10, Create: true})
		if err != nil {
			t.Fatal(err)
		}
		fs.(io.Closer).Close()
	}
	// u is opened again after being looked at: kept.
	_, opens, err := n2.replicas.leaderOpens("u")
	if err != nil {
		t.Fatal(err)
	}
	fs, err := n2.openCopy(&remotepb.OpenRequest{Stream: "u", Leader: "n1", RegionSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	fs.(io.Closer).Close()
	if to, err := n2.replicas.setAsideIfLeader("u", "n1", opens); to != "" || err != nil {
		t.Fatalf("a copy opened since it was looked at was set aside: %q, %v", to, err)
	}

	n2.sweepOrphans("n1", nodes[0].addr)
	deadline := time.Now().Add(5 * time.Second)
	for (n2.replicas.has("t") || n2.replicas.has("u")) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n2.replicas.has("t") || n2.replicas.has("u") {
		t.Fatal("n2 kept copies of streams n1 does not have")
	}
	if !n2.replicas.has("s") {
		t.Fatal("n2 removed its copy of s, which n1 leads")
	}
	// Set aside, not deleted: DATA/orphans/t.TIME and u.TIME.
	ents, err := os.ReadDir(n2.replicas.orphans)
	if err != nil || len(ents) != 2 || !strings.HasPrefix(ents[0].Name(), "t.") || !strings.HasPrefix(ents[1].Name(), "u.") {
		t.Fatalf("orphans: %v, %v", ents, err)
	}
	if _, err := c.Append(ctx, "s", []byte("two")); err != nil {
		t.Fatalf("append (acks all) after the sweep: %v", err)
	}
}

// TestDeleteCopyOfNamedStream: a leader's local-only delete of a copy
// that names the copy (leader and stream id) deletes it only if it is
// that leader's copy of that stream.
func TestDeleteCopyOfNamedStream(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	createAtN1(t, ctx, nodes, "s")
	n2 := nodes[1].srv
	path, _, err := n2.replicas.copyFile("s")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := local.StreamIDOf(b)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := client.Dial(nodes[1].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	del := func(copyOf string) error {
		ctx := metadata.AppendToOutgoingContext(ctx, localOnlyKey, "1", copyOfKey, copyOf)
		_, err := c2.API().DeleteStream(ctx, &api.DeleteStreamRequest{Stream: "s"})
		return err
	}
	for _, bad := range []string{fmt.Sprintf("n1/%x", id+1), fmt.Sprintf("n3/%x", id), "n1", "n1/zz"} {
		if err := del(bad); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("delete of n2's copy naming %q: %v, want FailedPrecondition", bad, err)
		}
		if !n2.replicas.has("s") {
			t.Fatalf("n2's copy deleted by a delete naming %q", bad)
		}
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := del(fmt.Sprintf("n1/%x", id)); err != nil {
		t.Fatalf("delete of n2's copy naming it: %v", err)
	}
	// The stream still exists at n1, whose Leader may reconnect to n2 at
	// once and make a new copy: the old file must be gone either way.
	if after, err := os.Stat(path); err == nil && os.SameFile(before, after) {
		t.Fatal("n2's copy kept")
	}
}

// createAtN1 creates stream name at nodes[0] (n1) with three replicas and
// acks all, appends one entry (so every copy exists), and returns the
// client it used (closed at the end of the test).
func createAtN1(t *testing.T, ctx context.Context, nodes []*testNode, name string) *client.Client {
	t.Helper()
	c, err := client.Dial(nodes[0].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Create(ctx, name, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, name, []byte("one")); err != nil {
		t.Fatal(err)
	}
	return c
}
