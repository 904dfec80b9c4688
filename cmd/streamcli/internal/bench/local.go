// Package bench measures rpstream. Each kind of benchmark is a config
// struct with a Run method returning a result (Local: Result; Cluster,
// appends through streamnode processes: ClusterResult); streamcli's
// "bench KIND" commands fill the config from flags and print the result.
// New options add fields to a config and to its result without changing
// the others.
package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/mover"
	"github.com/rpstream/rpstream/pmem"
)

// Local is "bench local": Count entries of Size bytes appended by Writers
// goroutines to a fresh stream in a fresh directory under Dir.
type Local struct {
	Count   int
	Size    int
	Writers int
	// Dir is where the temporary directory of the run is made (and
	// removed afterwards). Empty means DefaultDir.
	Dir string
	// RegionSize of the stream; zero means the default of package local.
	RegionSize int
	// Sync makes each append durable before it returns (Append). Without
	// it, appends only commit (AppendNoSync) and one Sync at the end,
	// inside the measured time, makes them all durable.
	Sync bool
	// NoLatency skips the clock reading after each append: the throughput
	// of the bare appends, without latency percentiles.
	NoLatency bool
	// NoPrepare leaves every region to be allocated while appending. By
	// default the regions the run will fill are prepared (allocated and,
	// on tmpfs, prefaulted) before the clock starts, as fio preallocates
	// its files: the run then measures appends, not the kernel's first
	// touch of every page (about 2 us a page on our machines).
	NoPrepare bool
	// Mover is the engine that copies payloads into the stream
	// (local.Appender). EngineUnset means $RPSTREAM_MOVER if set, else
	// sync.
	Mover mover.Engine
	// InFlight is how many appends each writer keeps in flight (0 means
	// 1). With 1 and no mover named (Mover unset, no $RPSTREAM_MOVER),
	// writers call Stream.Append (or AppendNoSync) directly; otherwise
	// each writer has a local.Appender on the mover and, when its window
	// is full, waits for its oldest append: durable with Sync, else
	// published. An append's latency then runs from its start to that
	// acknowledgement. Naming a mover always uses the Appender, so that
	// engines are compared on the same path.
	InFlight int
}

// engine is the mover engine the config asks for.
func (c Local) engine() mover.Engine {
	if c.Mover == mover.EngineUnset && os.Getenv(mover.EnvVar) == "" {
		return mover.EngineSync
	}
	return c.Mover
}

// direct says the run uses the synchronous appends of package local,
// without a mover: none was named and one append is in flight.
func (c Local) direct() bool {
	return c.Mover == mover.EngineUnset && os.Getenv(mover.EnvVar) == "" && c.InFlight <= 1
}

// DefaultDir is a directory in memory (tmpfs) where there is one, so that
// the benchmark measures the stream and not a disk, and says which.
func DefaultDir() (dir, why string) {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm", "tmpfs"
	}
	return os.TempDir(), "the system's temporary directory"
}

// Validate reports whether the config can run.
func (c Local) Validate() error {
	switch {
	case c.Count < 1:
		return fmt.Errorf("count must be at least 1, not %d", c.Count)
	case c.Size < 0:
		return fmt.Errorf("size must not be negative")
	case c.Writers < 1:
		return fmt.Errorf("writers must be at least 1, not %d", c.Writers)
	case c.Writers > c.Count:
		return fmt.Errorf("more writers (%d) than entries (%d)", c.Writers, c.Count)
	case c.InFlight < 0 || c.InFlight > local.MaxInFlight:
		return fmt.Errorf("inflight must be in [1, %d], not %d", local.MaxInFlight, c.InFlight)
	case c.Writers*max(c.InFlight, 1) > local.MaxInFlight:
		return fmt.Errorf("writers × inflight (%d) exceeds the stream's %d reservations in flight", c.Writers*c.InFlight, local.MaxInFlight)
	}
	rs := c.RegionSize
	if rs == 0 {
		rs = local.DefaultRegionSize
	}
	if err := (local.Options{RegionSize: c.RegionSize}).Validate(); err != nil {
		return err
	}
	if m := local.MaxEntrySize(rs); c.Size > m {
		return fmt.Errorf("size %d is larger than the largest entry (%d bytes) of region size %d", c.Size, m, rs)
	}
	return nil
}

// Run runs the benchmark. It stops early, with ctx's error, when ctx ends.
func (c Local) Run(ctx context.Context) (*Result, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	parent := c.Dir
	if parent == "" {
		parent, _ = DefaultDir()
	}
	dir, err := os.MkdirTemp(parent, "rpstream-bench-")
	if err != nil {
		return nil, fmt.Errorf("make temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	s, err := local.Create(filepath.Join(dir, "bench.stream"), local.Options{RegionSize: c.RegionSize})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	m, err := mover.New(mover.Config{Engine: c.engine()})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	prepared := 0
	if !c.NoPrepare {
		rs := s.RegionSize()
		prepared = int((int64(c.Count)*int64(8+(c.Size+7)&^7))/int64(rs-local.RegionHeaderSize)) + 1
		if err := s.Prepare(prepared); err != nil {
			return nil, fmt.Errorf("preparing %d regions: %w", prepared, err)
		}
	}

	// Each writer records its latencies in its own preallocated slice:
	// no allocation, lock or shared cache line on the measured path.
	lat := make([][]uint32, c.Writers)
	for w := range lat {
		n := c.Count / c.Writers
		if w < c.Count%c.Writers {
			n++
		}
		lat[w] = make([]uint32, n)
	}
	payload := make([]byte, c.Size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errMu sync.Mutex
		first error
		last  = make([]uint64, c.Writers)
		apps  = make([]*local.Appender, c.Writers)
	)
	if !c.direct() {
		for w := range apps {
			if apps[w], err = local.NewAppender(s, m, local.AppenderOptions{MaxInFlight: max(c.InFlight, 1)}); err != nil {
				return nil, err
			}
		}
	}
	for w := range lat {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var err error
			if apps[w] != nil {
				last[w], err = c.writeAsync(ctx, s, apps[w], payload, lat[w])
			} else {
				last[w], err = c.write(ctx, s, payload, lat[w])
			}
			if err != nil {
				errMu.Lock()
				if first == nil {
					first = err
				}
				errMu.Unlock()
			}
		}()
	}
	t0, c0 := time.Now(), clock()
	close(start)
	wg.Wait()
	if first == nil && !c.Sync {
		var max uint64
		for _, i := range last {
			max = maxU(max, i)
		}
		first = s.Sync(max)
	}
	elapsed, c1 := time.Since(t0), clock()
	if first != nil {
		return nil, first
	}
	r := &Result{
		Kind: "local", Count: c.Count, Size: c.Size, Writers: c.Writers,
		Dir: parent, Sync: c.Sync, RegionSize: s.RegionSize(),
		Mode: s.Mode().String(), Seconds: elapsed.Seconds(),
		PreparedRegions: prepared,
		Mover:           m.Name(), MoverDetail: m.Describe(), InFlight: max(c.InFlight, 1),
	}
	if c.direct() {
		r.Mover = "none"
		r.MoverDetail = "none: Stream.Append copies each entry itself (no --mover, --inflight 1)"
	}
	for _, a := range apps {
		if a != nil {
			r.Fallbacks += a.Fallbacks()
		}
	}
	if d, ok := s.Memory().(pmem.Describer); ok {
		r.ModeDetail = d.Describe()
	}
	if c.NoLatency {
		lat = nil
	} else {
		r.Clock = clockSource()
	}
	r.fill(lat, float64(elapsed.Nanoseconds())/float64(c1-c0))
	return r, s.Close()
}

// write appends len(lat) entries, recording the latency of each in lat
// in clock ticks. One clock reading per append: each append's latency runs
// from the end of the previous one.
func (c Local) write(ctx context.Context, s *local.Stream, p []byte, lat []uint32) (last uint64, err error) {
	if c.NoLatency {
		return c.writeUntimed(ctx, s, p, len(lat))
	}
	prev := clock()
	for k := range lat {
		if k&1023 == 0 && ctx.Err() != nil {
			return last, ctx.Err()
		}
		var i uint64
		if c.Sync {
			i, err = s.Append(p)
		} else {
			i, err = s.AppendNoSync(p)
		}
		if err != nil {
			return last, fmt.Errorf("append: %w", err)
		}
		now := clock()
		d := now - prev
		prev = now
		lat[k] = uint32(min(d, maxLatency))
		last = maxU(last, i)
	}
	return last, nil
}

// writeAsync appends len(lat) entries through a, keeping up to
// c.InFlight of them in flight; when the window is full it waits for the
// oldest (durable with c.Sync, else published) and records its latency
// from its start, in clock ticks. The appends of one writer are
// acknowledged in order, so a ring of start times suffices.
func (c Local) writeAsync(ctx context.Context, s *local.Stream, a *local.Appender, p []byte, lat []uint32) (last uint64, err error) {
	w := max(c.InFlight, 1)
	idx := make([]uint64, w)
	began := make([]int64, w)
	acked := 0 // appends acknowledged; k-acked are in flight
	ack := func() error {
		j := acked % w
		var err error
		if c.Sync {
			err = s.SyncContext(ctx, idx[j])
		} else {
			err = s.WaitCommitted(ctx, idx[j])
		}
		if err != nil {
			return err
		}
		if !c.NoLatency {
			lat[acked] = uint32(min(clock()-began[j], maxLatency))
		}
		acked++
		return nil
	}
	for k := range lat {
		if k&1023 == 0 && ctx.Err() != nil {
			return last, ctx.Err()
		}
		if k-acked == w {
			if err := ack(); err != nil {
				return last, err
			}
		}
		j := k % w
		if !c.NoLatency {
			began[j] = clock()
		}
		i, err := a.Start(ctx, p)
		if err != nil {
			return last, fmt.Errorf("append: %w", err)
		}
		idx[j] = i
		last = maxU(last, i)
	}
	for acked < len(lat) {
		if err := ack(); err != nil {
			return last, err
		}
	}
	return last, nil
}

// writeUntimed is write without the clock.
func (c Local) writeUntimed(ctx context.Context, s *local.Stream, p []byte, n int) (last uint64, err error) {
	for k := 0; k < n; k++ {
		if k&1023 == 0 && ctx.Err() != nil {
			return last, ctx.Err()
		}
		var i uint64
		if c.Sync {
			i, err = s.Append(p)
		} else {
			i, err = s.AppendNoSync(p)
		}
		if err != nil {
			return last, fmt.Errorf("append: %w", err)
		}
		last = maxU(last, i)
	}
	return last, nil
}

// maxLatency is the largest latency recorded, in clock ticks; longer
// ones are recorded as this (4.29 s in nanoseconds, over a second in
// ticks of a counter at up to 4 GHz).
const maxLatency = int64(^uint32(0))

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}
