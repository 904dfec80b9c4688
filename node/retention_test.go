package node

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

// waitFor polls cond for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRetentionAlone: a node without a catalog keeps a stream's policy in
// meta.json and applies it; trim frees whole regions; consumers need a
// catalog; a negative max age is refused.
func TestRetentionAlone(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	n := startNode(t, dir)
	_, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s", Retention: &api.Retention{MaxAgeNs: -1}})
	wantCode(t, err, codes.InvalidArgument)
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s", Retention: &api.Retention{MaxEntries: 200}}); err != nil {
		t.Fatal(err)
	}
	const count = 600 // about 500 bytes each: several 64 KiB regions
	for i := range count {
		if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: fmt.Appendf(nil, "entry %d %0500d", i, i)}); err != nil {
			t.Fatal(err)
		}
	}
	var st *api.StreamStatusResponse
	waitFor(t, "retention to trim", func() bool {
		st, err = n.c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: "s"})
		if err != nil {
			t.Fatal(err)
		}
		return st.Head > 0
	})
	if st.Head > count-200 || st.Retention.GetMaxEntries() != 200 {
		t.Fatalf("after retention: head %d, policy %v; want at most %d entries trimmed", st.Head, st.Retention, count-200)
	}
	r, err := n.c.Read(ctx, &api.ReadRequest{Stream: "s", From: 0})
	wantCode(t, err, codes.FailedPrecondition)
	// Retention trims a region at a time and may pass again between the
	// status and the read: a read at a head that moved on is refused as
	// trimmed; read at the new one (a few passes at most).
	for try := 0; ; try++ {
		r, err = n.c.Read(ctx, &api.ReadRequest{Stream: "s", From: st.Head, MaxEntries: 1})
		if status.Code(err) == codes.FailedPrecondition && try < 10 {
			if st, err = n.c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: "s"}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		break
	}
	if err != nil || len(r.Entries) != 1 || !bytes.HasPrefix(r.Entries[0].Data, fmt.Appendf(nil, "entry %d ", st.Head)) {
		t.Fatalf("read at the head %d: %v, %v", st.Head, r, err)
	}
	if st.Head > count-200 {
		t.Fatalf("retention trimmed to %d, more than %d entries", st.Head, count-200)
	}

	// No policy: the head stays; an explicit trim moves it.
	if _, err := n.c.SetRetention(ctx, &api.SetRetentionRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	_, err = n.c.TrimStream(ctx, &api.TrimStreamRequest{Stream: "s", Before: count + 1})
	wantCode(t, err, codes.FailedPrecondition)
	tr, err := n.c.TrimStream(ctx, &api.TrimStreamRequest{Stream: "s", Before: count - 10})
	if err != nil || tr.Head <= st.Head || tr.Head > count-10 {
		t.Fatalf("trim before %d: %v, %v (head was %d)", count-10, tr, err, st.Head)
	}
	_, err = n.c.AddConsumer(ctx, &api.AddConsumerRequest{Stream: "s", Consumer: "c"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = n.c.SetRetention(ctx, &api.SetRetentionRequest{Stream: "s", Retention: &api.Retention{MaxAgeNs: -1}})
	wantCode(t, err, codes.InvalidArgument)

	// The policy and the head survive a restart.
	if _, err := n.c.SetRetention(ctx, &api.SetRetentionRequest{Stream: "s", Retention: &api.Retention{MaxBytes: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	n.stop(t)
	n = startNode(t, dir)
	st, err = n.c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: "s"})
	if err != nil || st.Head != tr.Head || st.Retention.GetMaxBytes() != 1<<20 {
		t.Fatalf("after a restart: %v, %v; want head %d and the policy", st, err, tr.Head)
	}
}

// TestRetentionMaxAge: entries older than the policy's max age, by the
// times their leader stamped, are trimmed (whole regions); younger ones
// stay.
func TestRetentionMaxAge(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	const age = 2 * time.Second
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "aged", Retention: &api.Retention{MaxAgeNs: int64(age)}}); err != nil {
		t.Fatal(err)
	}
	const old = 600 // about 500 bytes each: several 64 KiB regions
	for i := range old {
		if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "aged", Data: fmt.Appendf(nil, "old %d %0500d", i, i)}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(age + age/4)
	young := time.Now()
	for i := range 200 {
		if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "aged", Data: fmt.Appendf(nil, "young %d %0500d", i, i)}); err != nil {
			t.Fatal(err)
		}
	}
	var st *api.StreamStatusResponse
	var err error
	waitFor(t, "max-age retention to trim", func() bool {
		st, err = n.c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: "aged"})
		if err != nil {
			t.Fatal(err)
		}
		return st.Head > 0
	})
	if st.Retention.GetMaxAgeNs() != int64(age) {
		t.Fatalf("policy %v, want a max age of %v", st.Retention, age)
	}
	// Nothing younger than the age was trimmed (checked only while the
	// young entries are younger than it: a loaded machine may be late).
	if since := time.Since(young); since < age {
		if st.Head > old {
			t.Fatalf("after max-age retention: head %d; want old entries only trimmed (at most %d)", st.Head, old)
		}
		r, err := n.c.Read(ctx, &api.ReadRequest{Stream: "aged", From: old, MaxEntries: 1})
		if err != nil || len(r.Entries) != 1 {
			t.Fatalf("read the first young entry: %v, %v", r, err)
		}
	} else {
		t.Logf("checked %v after the young entries, past their age: only that something was trimmed (head %d)", since, st.Head)
	}
}

// TestConsumersHoldRetention: in a cluster, a consumer with a hold stops
// retention and trims at its acknowledged position; acks are committed
// in batches; status reports the lag.
func TestConsumersHoldRetention(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	c, err := client.Dial(nodes[0].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "r", client.CreateOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	k, err := c.AddConsumer(ctx, "r", "audit", 0, true)
	if err != nil || k.Acked != 0 || !k.Hold {
		t.Fatalf("add consumer: %v, %v", k, err)
	}
	_, err = c.AddConsumer(ctx, "r", "audit", 0, false)
	wantCode(t, err, codes.AlreadyExists)
	const count = 1000
	entries := make([][]byte, count)
	for i := range entries {
		entries[i] = fmt.Appendf(nil, "entry %d %0500d", i, i)
	}
	for i := 0; i < count; i += 100 {
		if _, err := c.AppendBatch(ctx, "r", entries[i:i+100]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SetRetention(ctx, "r", &api.Retention{MaxEntries: 100}); err != nil {
		t.Fatal(err)
	}
	// The hold at 0 keeps everything.
	_, err = c.Trim(ctx, "r", 500)
	wantCode(t, err, codes.FailedPrecondition)
	time.Sleep(1500 * time.Millisecond) // a retention round
	st, err := c.Status(ctx, "r")
	if err != nil || st.Head != 0 || st.TrimHead != 0 {
		t.Fatalf("held at 0: %v, %v", st, err)
	}
	if len(st.Consumers) != 1 || st.Consumers[0].Lag != count {
		t.Fatalf("consumers %v, want audit with lag %d", st.Consumers, count)
	}

	// Acknowledged up to 600 (batched, asynchronously): retention trims
	// to the region holding 600 at the latest.
	for _, p := range []uint64{100, 300, 600, 200} {
		if _, err := c.Ack(ctx, "r", "audit", p, false); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "retention to trim up to the hold", func() bool {
		st, err = c.Status(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		return st.Head > 0 && st.TrimHead > 0
	})
	if st.Head > 600 || st.TrimHead > 600 || st.Head > st.TrimHead {
		t.Fatalf("trimmed past the hold at 600: head %d, trim head %d", st.Head, st.TrimHead)
	}
	lc, err := c.Consumers(ctx, "r")
	if err != nil || len(lc.Consumers) != 1 || lc.Consumers[0].Acked != 600 || lc.Consumers[0].Lag != count-600 {
		t.Fatalf("consumers: %v, %v", lc, err)
	}
	// Without the hold, the policy's 100 newest entries remain, about.
	if err := c.RemoveConsumer(ctx, "r", "audit"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.RemoveConsumer(ctx, "r", "audit"), codes.NotFound)
	waitFor(t, "retention to trim to the policy", func() bool {
		st, err = c.Status(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		return st.Head >= count-100-200 // within a region of the policy
	})
	if st.Head > count-100 {
		t.Fatalf("head %d: more than the policy trimmed", st.Head)
	}
	// A read on a follower's copy stops at the copy's head too.
	conn, err := grpc.NewClient(nodes[1].addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fc := api.NewStreamsClient(conn)
	waitFor(t, "the follower's copy to follow the head", func() bool {
		_, err := fc.Read(ctx, &api.ReadRequest{Stream: "r", From: 0, MaxEntries: 1})
		return status.Code(err) == codes.FailedPrecondition && strings.Contains(err.Error(), "trimmed")
	})
}
