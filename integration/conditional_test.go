package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

// TestConditionalAppendsAcrossFailover: clients of a three-node cluster
// (node processes) append conditionally, all expecting the same position
// in each round, with batches of 1 to 3 entries: exactly one wins each
// round, and every loser is told the position the winner left next. The
// leader is then SIGKILLed; under the new leader, the first round's
// expectation fails for everyone with the position after the new epoch's
// marker (markers take positions), and rounds go on from there. At the
// end the stream holds exactly the winners' batches, each whole, at the
// positions they were acknowledged with.
func TestConditionalAppendsAcrossFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "conditional"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
	if err != nil {
		t.Fatal(err)
	}
	seeds := strings.Join(cl.ClientAddrs(), ",")
	const clients, rounds = 4, 25
	cs := make([]*client.Client, clients)
	for k := range cs {
		cs[k] = dial(t, seeds, client.Options{Timeout: 30 * time.Second})
	}
	want := map[uint64]string{} // position → entry, of every winner
	next := uint64(0)
	// round has every client append with expected position next, at once,
	// and returns the position the losers were told (the winner's end).
	round := func(r int) (winners int, actual uint64) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		actuals := map[uint64]int{}
		begin := make(chan struct{})
		for k, c := range cs {
			entries := make([][]byte, 1+(k+r)%3)
			for j := range entries {
				entries[j] = fmt.Appendf(nil, "r%d-c%d-%d", r, k, j)
			}
			wg.Go(func() {
				<-begin
				pos, err := c.AppendWith(ctx, stream, entries, client.AppendOptions{ExpectNext: next, Expect: true})
				mu.Lock()
				defer mu.Unlock()
				var ce *client.ConditionError
				switch {
				case err == nil:
					winners++
					for j, p := range pos {
						if p != next+uint64(j) {
							t.Errorf("round %d: client %d's entry %d at %d, expected at %d", r, k, j, p, next+uint64(j))
						}
						want[p] = string(entries[j])
					}
					actuals[next+uint64(len(entries))]++
				case errors.As(err, &ce):
					if !errors.Is(err, client.ErrConditionFailed) || ce.Expected != next {
						t.Errorf("round %d: client %d: %v", r, k, err)
					}
					actuals[ce.Actual]++
				default:
					t.Errorf("round %d: client %d: %v", r, k, err)
				}
			})
		}
		close(begin)
		wg.Wait()
		if len(actuals) != 1 {
			t.Fatalf("round %d: the clients disagree on the next position: %v", r, actuals)
		}
		for a := range actuals {
			actual = a
		}
		return winners, actual
	}
	for r := range rounds {
		w, a := round(r)
		if w != 1 {
			t.Fatalf("round %d: %d winners, want exactly 1", r, w)
		}
		next = a
	}
	leader := indexOf(t, cl, st.Leader)
	if err := cl.Kill(leader); err != nil {
		t.Fatal(err)
	}
	newLeader, epoch := leaderOf(t, ctx, cl, stream, st.Leader)
	t.Logf("%s killed; %s leads under epoch %d", st.Leader, newLeader, epoch)
	w, a := round(rounds)
	if w != 0 || a <= next {
		t.Fatalf("first round after the failover: %d winners, next position %d (was %d): want none, past the new epoch's marker", w, a, next)
	}
	t.Logf("next position %d before the failover, %d after", next, a)
	next = a
	for r := rounds + 1; r < 2*rounds; r++ {
		w, a := round(r)
		if w != 1 {
			t.Fatalf("round %d: %d winners, want exactly 1", r, w)
		}
		next = a
	}
	if err := cl.Start(ctx, leader); err != nil {
		t.Fatal(err)
	}
	// Read back from the leader: exactly the winners' entries, at their
	// positions.
	final, _ := leaderOf(t, ctx, cl, stream, "")
	reader := dial(t, mustNode(cl, indexOf(t, cl, final)).ClientAddr, client.Options{})
	got := map[uint64]string{}
	for from := uint64(0); from < next; {
		es, n, err := reader.Read(ctx, stream, from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 && n == from {
			t.Fatalf("read from %d: nothing, next position %d", from, next)
		}
		for _, e := range es {
			got[e.Position] = string(e.Data)
			if e.Time.IsZero() {
				t.Errorf("entry %d without a time", e.Position)
			}
		}
		from = n
	}
	if len(got) != len(want) {
		t.Errorf("%d entries read, %d appended by winners", len(got), len(want))
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("position %d holds %q, want %q", p, got[p], w)
		}
	}
}
