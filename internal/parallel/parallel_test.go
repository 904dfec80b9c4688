package parallel

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// Each calls f once per value, never more than limit at once, and
// returns every error.
func TestEach(t *testing.T) {
	m := map[int]int{}
	for i := range 50 {
		m[i] = i
	}
	var running, most, calls atomic.Int32
	err := Each(m, 4, func(v int) error {
		calls.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := most.Load()
			if n <= p || most.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		if v%10 == 0 {
			return fmt.Errorf("value %d", v)
		}
		return nil
	})
	if calls.Load() != 50 {
		t.Fatalf("%d calls, want 50", calls.Load())
	}
	if most.Load() > 4 || most.Load() < 2 {
		t.Fatalf("%d at once, want 2 to 4", most.Load())
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 5 {
		t.Fatalf("errors: %v", err)
	}
	if err := Each(map[string]int{}, 0, func(int) error { return errors.New("no") }); err != nil {
		t.Fatalf("empty map: %v", err)
	}
}
