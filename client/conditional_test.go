package client_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/client"
)

// TestAppendWithExpect: a conditional append is stored at the expected
// position or refused with a *ConditionError naming the actual one; a
// batch is stored whole; entries read back carry their times, and
// FindPosition finds them by time.
func TestAppendWithExpect(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c, err := client.Dial(addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	pos, err := c.AppendWith(ctx, "s", [][]byte{[]byte("a"), []byte("b"), []byte("c")}, client.AppendOptions{Expect: true, ExpectNext: 0})
	if err != nil || len(pos) != 3 || pos[0] != 0 || pos[2] != 2 {
		t.Fatalf("conditional batch: %v, %v", pos, err)
	}
	_, err = c.AppendWith(ctx, "s", [][]byte{[]byte("x")}, client.AppendOptions{Expect: true, ExpectNext: 2})
	var ce *client.ConditionError
	if !errors.As(err, &ce) || !errors.Is(err, client.ErrConditionFailed) || ce.Expected != 2 || ce.Actual != 3 || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale expectation: %v (%+v)", err, ce)
	}
	time.Sleep(2 * time.Millisecond)
	mid := time.Now()
	if pos, err = c.AppendWith(ctx, "s", [][]byte{[]byte("d")}, client.AppendOptions{Expect: true, ExpectNext: 3}); err != nil || pos[0] != 3 {
		t.Fatalf("append at 3: %v, %v", pos, err)
	}
	// Unconditional, as Append.
	if pos, err = c.AppendWith(ctx, "s", [][]byte{[]byte("e")}, client.AppendOptions{}); err != nil || pos[0] != 4 {
		t.Fatalf("append: %v, %v", pos, err)
	}
	es, _, err := c.Read(ctx, "s", 0, 0)
	if err != nil || len(es) != 5 {
		t.Fatalf("read: %v, %v", es, err)
	}
	for i, e := range es {
		// Entries 0 to 2 are one batch, appended at one time.
		if e.Time.Before(before) || e.Time.After(time.Now()) || (i >= 3 && !e.Time.After(es[i-1].Time)) {
			t.Errorf("entry %d at %v", i, e.Time)
		}
	}
	if !es[1].Time.Equal(es[0].Time) || !es[2].Time.Equal(es[0].Time) {
		t.Errorf("a batch's entries at %v, %v, %v: want one time", es[0].Time, es[1].Time, es[2].Time)
	}
	for _, c2 := range []struct {
		since time.Time
		want  uint64
	}{{before, 0}, {mid, 3}, {es[4].Time, 4}, {time.Now().Add(time.Hour), 5}} {
		if p, err := c.FindPosition(ctx, "s", c2.since); err != nil || p != c2.want {
			t.Errorf("FindPosition(%v): %d, %v; want %d", c2.since, p, err, c2.want)
		}
	}
	_, err = c.AppendWith(ctx, "s", nil, client.AppendOptions{})
	if err == nil {
		t.Fatal("an empty append was accepted")
	}
}
