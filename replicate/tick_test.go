package replicate_test

import (
	"errors"
	"testing"

	"github.com/rpstream/rpstream/replicate"
)

// TestTicksToNext: a loop that sleeps TicksToNext ticks and then calls
// TickN once asks to reconnect a failed replica on the same tick as one
// that calls Tick every tick, however many failures in a row doubled the
// backoff; and with nothing to wait for, no tick is asked for.
func TestTicksToNext(t *testing.T) {
	// run fails replica b failures times in a row and returns the ticks
	// from the last failure to the next connect, advancing time with
	// advance (which returns the ticks it advanced).
	run := func(failures int, advance func(*replicate.Replicator) int) int {
		r, err := replicate.New(replicate.DefaultConfig(), 1)
		if err != nil {
			t.Fatal(err)
		}
		r.AddReplica("b", false)
		rd := r.Ready()
		if len(rd.Connects) != 1 {
			t.Fatalf("connects %v", rd.Connects)
		}
		gen := rd.Connects[0].Gen
		n := 0
		for range failures {
			if err := r.Failed("b", gen, errors.New("down")); err != nil {
				t.Fatal(err)
			}
			n = 0
			for {
				if rd := r.Ready(); len(rd.Connects) > 0 {
					gen = rd.Connects[0].Gen
					break
				}
				k := advance(r)
				if k == 0 {
					t.Fatal("no tick asked for while a replica waits to reconnect")
				}
				if n += k; n > 10_000 {
					t.Fatal("no reconnect in 10,000 ticks")
				}
			}
		}
		return n
	}
	each := func(r *replicate.Replicator) int { r.Tick(); return 1 }
	batched := func(r *replicate.Replicator) int {
		k := r.TicksToNext()
		r.TickN(k)
		return k
	}
	for _, f := range []int{1, 2, 4, 6, 10} {
		if a, b := run(f, each), run(f, batched); a != b || a < 1 {
			t.Errorf("after %d failures: reconnect after %d ticks one at a time, %d batched", f, a, b)
		}
	}
	if a, b := run(10, each), run(1, each); a <= b {
		t.Errorf("backoff after 10 failures (%d ticks) not longer than after 1 (%d)", a, b)
	}
	r, err := replicate.New(replicate.DefaultConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	r.AddReplica("b", false)
	if r.Ready(); r.TicksToNext() != 0 {
		t.Fatalf("TicksToNext %d while connecting: nothing waits on time", r.TicksToNext())
	}
}
