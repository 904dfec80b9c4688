package local_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/mover"
)

// recorder checks the observer's contract as events come: regions in
// sequence, spans contiguous within their region and in index order.
type recorder struct {
	mu        sync.Mutex
	err       error
	seq       uint64
	slot      int
	tail      int
	end       uint64
	persisted uint64
	regions   int
}

func (r *recorder) failf(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, a...)
	}
}

func (r *recorder) RegionStarted(g local.ObservedRegion) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g.Seq != r.seq+1 || g.First != r.end {
		r.failf("region %+v after region %d ending at index %d", g, r.seq, r.end)
	}
	r.seq, r.slot, r.tail = g.Seq, g.Slot, local.RegionHeaderSize
	r.regions++
}

func (r *recorder) Committed(s local.Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.Seq != r.seq || s.Slot != r.slot || s.Off != r.tail || s.Len <= 0 || s.End <= r.end {
		r.failf("span %+v at region %d slot %d tail %d end %d", s, r.seq, r.slot, r.tail, r.end)
	}
	r.tail += s.Len
	r.end = s.End
}

func (r *recorder) Persisted(i uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.persisted = max(r.persisted, i)
}

// Every way of appending (Append, AppendNoSync, Reserve+Publish, the
// asynchronous Appender), from many goroutines at once, is reported in
// commit order, and the spans add up to the stream's regions.
func TestObserverSeesEveryAppendInOrder(t *testing.T) {
	s, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Some entries before the observer: it starts from there.
	for i := 0; i < 50; i++ {
		if _, err := s.Append(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	st, err := s.SetObserver(rec)
	if err != nil {
		t.Fatal(err)
	}
	last := st.Regions[len(st.Regions)-1]
	if st.Committed != 50 || last.First+last.Count != 50 {
		t.Fatalf("start %+v", st)
	}
	rec.seq, rec.slot, rec.tail, rec.end = last.Seq, last.Slot, last.Used, st.Committed

	m, err := mover.New(mover.Config{Engine: mover.EngineCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := local.NewAppender(s, m, local.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const per = 300
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				p := make([]byte, 1+(i*37+w*11)%500)
				var err error
				switch w {
				case 0:
					_, err = s.Append(p)
				case 1:
					_, err = s.AppendNoSync(p)
				case 2:
					var v *local.Reservation
					if v, err = s.Reserve(len(p)); err == nil {
						copy(v.Bytes(), p)
						_, err = v.Publish()
					}
				case 3:
					_, err = a.Start(context.Background(), p)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(s.Committed() - 1); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.err != nil {
		t.Fatal(rec.err)
	}
	regs := s.Regions()
	tail := regs[len(regs)-1]
	if rec.end != 50+4*per || rec.seq != tail.Seq || rec.tail != tail.Used || rec.persisted != rec.end {
		t.Fatalf("observed end %d region %d tail %d persisted %d; stream committed %d, tail region %+v",
			rec.end, rec.seq, rec.tail, rec.persisted, s.Committed(), tail)
	}
	if rec.regions < 2 {
		t.Fatalf("only %d regions started: the test does not cross regions", rec.regions)
	}
	if _, err := s.SetObserver(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if rec.end != 50+4*per {
		t.Fatal("a removed observer was called")
	}
}

func TestSetObserverOnReadOnlyStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	s, err := local.Create(path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := local.Open(path, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.SetObserver(&recorder{}); err == nil {
		t.Fatal("SetObserver on a read-only stream succeeded")
	}
}
