//go:build linux

package mover

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/rpstream/rpstream/mover/dsamodel"
)

var fullModel = dsamodel.Config{MaxTransfer: 64 << 10, MaxBatch: 16, Overlap: true, Readback: true, CacheCtl: true, Seed: 1}

// newModelEngine starts the dsa engine on a device model reached through
// path: "write" (a pipe), "portal" (MOVDIR64B into a mapped page) or
// "enqcmd" (the model's software ENQCMD, shared mode).
func newModelEngine(t testing.TB, mc dsamodel.Config, path string, dc DSAConfig) (*dsaEngine, *dsamodel.Device) {
	t.Helper()
	dev := dsamodel.New(mc)
	t.Cleanup(func() {
		dev.Close()
		if err := dev.Err(); err != nil {
			t.Error(err)
		}
	})
	mode := "dedicated"
	var sub submitter
	switch path {
	case "write":
		w, err := dev.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		sub = &fileSubmitter{fd: int(w.Fd()), name: "model pipe"}
	case "portal", "enqcmd":
		if path == "portal" && !hasMOVDIR64B {
			t.Skip("CPU lacks MOVDIR64B")
		}
		page, err := dev.Portal()
		if err != nil {
			t.Fatal(err)
		}
		ps := &portalSubmitter{portal: unsafe.Pointer(&page[0]), name: "model portal"}
		if path == "enqcmd" {
			ps.shared, ps.enq, mode = true, dev.Enqcmd, "shared"
		}
		sub = ps
	}
	wq := WorkQueue{Name: "wq0.0", Device: "dsa0", Path: "(model)", Mode: mode, Size: 32,
		MaxTransferSize: mc.MaxTransfer, MaxBatchSize: mc.MaxBatch, State: "enabled", Type: "user", GenCap: mc.GenCap()}
	cfg := DefaultConfig()
	cfg.DSA = dc
	if cfg.DSA.CPUBelow == 0 {
		cfg.DSA.CPUBelow = -1 // everything to the device
	}
	cfg.fillDefaults()
	e, err := newDSAEngine(&cfg, wq, sub, "test: device model")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	})
	return e, dev
}

func TestDSAConformance(t *testing.T) {
	for _, path := range []string{"write", "portal", "enqcmd"} {
		t.Run(path, func(t *testing.T) {
			e, dev := newModelEngine(t, fullModel, path, DSAConfig{})
			t.Log(e.Describe())
			testEngineConformance(t, e)
			st := dev.Stats()
			if st.Descriptors == 0 || st.Readbacks == 0 || e.stats.batches.Load() == 0 {
				t.Fatalf("model saw %+v, engine sent %d batches", st, e.stats.batches.Load())
			}
			if (st.Batches == 0) != (path == "write") { // write(): several descriptors per call instead
				t.Fatalf("path %s: model saw %d batch descriptors", path, st.Batches)
			}
			via := map[string]int64{"write": st.ViaWrite, "portal": st.ViaPortal, "enqcmd": st.ViaEnqcmd}[path]
			if via == 0 {
				t.Fatalf("nothing came through %s: %+v", path, st)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if dev.Stats().Drains != 1 {
				t.Fatal("close did not drain")
			}
			testClose(t, e)
		})
	}
}

func TestDSAPageFaults(t *testing.T) {
	for _, path := range []string{"write", "portal"} {
		t.Run(path, func(t *testing.T) {
			e, dev := newModelEngine(t, fullModel, path, DSAConfig{})
			dev.InjectFaults(1 << 30) // every descriptor faults
			testEngineConformance(t, e)
			if e.stats.faults.Load() == 0 || e.stats.resubmits.Load() == 0 || e.stats.cpuFallbacks.Load() == 0 {
				t.Fatalf("faults %d resubmits %d cpu %d", e.stats.faults.Load(), e.stats.resubmits.Load(), e.stats.cpuFallbacks.Load())
			}
		})
	}
	t.Run("some", func(t *testing.T) {
		e, dev := newModelEngine(t, fullModel, "write", DSAConfig{})
		ctx := context.Background()
		src, dst := make([]byte, 200000), make([]byte, 200000)
		for i := range src {
			src[i] = byte(i * 3)
		}
		for i := 0; i < 20; i++ {
			dev.InjectFaults(1)
			clear(dst)
			if err := Copy(ctx, e, dst, src, Durable).Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst, src) {
				t.Fatal("wrong bytes after a fault")
			}
		}
		if e.stats.cpuFallbacks.Load() != 0 || e.stats.resubmits.Load() == 0 {
			t.Fatalf("one fault should be resubmitted, not done on the CPU: %d %d", e.stats.cpuFallbacks.Load(), e.stats.resubmits.Load())
		}
	})
}

func TestDSADeviceError(t *testing.T) {
	e, dev := newModelEngine(t, fullModel, "write", DSAConfig{})
	ctx := context.Background()
	src, dst := make([]byte, 3*fullModel.MaxTransfer), make([]byte, 3*fullModel.MaxTransfer)
	dev.InjectError(dsamodel.StatusXferRange)
	err := Copy(ctx, e, dst, src, 0).Wait(ctx)
	var pe *PartialError
	var de *DeviceError
	if !errors.As(err, &pe) || !errors.As(err, &de) || !errors.Is(err, ErrDevice) {
		t.Fatalf("got %v", err)
	}
	if de.Status != dsamodel.StatusXferRange || pe.Len != len(src) || pe.Done%fullModel.MaxTransfer != 0 {
		t.Fatalf("partial %+v device %+v", pe, de)
	}
	t.Log(err)
	if err := Copy(ctx, e, dst, src, 0).Wait(ctx); err != nil {
		t.Fatal("the next copy:", err)
	}
}

func TestDSABusyRetry(t *testing.T) {
	e, dev := newModelEngine(t, fullModel, "enqcmd", DSAConfig{})
	dev.InjectBusy(40)
	ctx := context.Background()
	src, dst := make([]byte, 100000), make([]byte, 100000)
	src[99999] = 9
	if err := Copy(ctx, e, dst, src, 0).Wait(ctx); err != nil || dst[99999] != 9 {
		t.Fatal(err)
	}
	if e.stats.busy.Load() < 40 || dev.Stats().Busy < 40 {
		t.Fatalf("busy retries: engine %d model %d", e.stats.busy.Load(), dev.Stats().Busy)
	}
}

func TestDSABatchListFault(t *testing.T) {
	e, dev := newModelEngine(t, fullModel, "enqcmd", DSAConfig{})
	dev.InjectListFault(1)
	var b Batch
	src := bytes.Repeat([]byte{1, 2, 3}, 10000)
	d1, d2 := make([]byte, len(src)), make([]byte, len(src))
	o1, o2 := b.Copy(d1, src, 0), b.Fill(d2, 5, Durable)
	if err := e.SubmitBatch(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	if o1.Wait(context.Background()) != nil || o2.Wait(context.Background()) != nil || !bytes.Equal(d1, src) || d2[100] != 5 {
		t.Fatal("batch after a list fault")
	}
	if e.stats.resubmits.Load() < 2 {
		t.Fatalf("sub-descriptors not resubmitted: %d", e.stats.resubmits.Load())
	}
}

// A descriptor of a batch that fails fails its own request only; the
// batch's other requests complete.
func TestDSABatchSubFailure(t *testing.T) {
	e, dev := newModelEngine(t, fullModel, "enqcmd", DSAConfig{})
	var b Batch
	bufs := make([][]byte, 4)
	ops := make([]*Op, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 10000)
		ops[i] = b.Fill(bufs[i], byte(i+1), 0)
	}
	dev.InjectError(dsamodel.StatusInvalidFlags)
	if err := e.SubmitBatch(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i, o := range ops {
		err := o.Wait(context.Background())
		switch {
		case errors.Is(err, ErrDevice):
			failed++
		case err != nil:
			t.Fatal(err)
		case bufs[i][9999] != byte(i+1):
			t.Fatalf("request %d not done", i)
		}
	}
	if failed != 1 || dev.Stats().Batches != 1 {
		t.Fatalf("%d failed, model %+v", failed, dev.Stats())
	}
}

// A device without overlap support, readback or cache control must never
// be sent what it cannot do: the model rejects it, and reports it.
func TestDSAMinimalDevice(t *testing.T) {
	e, dev := newModelEngine(t, dsamodel.Config{MaxTransfer: 4096, MaxBatch: 4}, "write", DSAConfig{})
	testEngineConformance(t, e)
	if st := dev.Stats(); st.Errors != 0 || st.Readbacks != 0 {
		t.Fatalf("%+v", st)
	}
	if !strings.Contains(e.Describe(), "no destination readback") {
		t.Fatal(e.Describe())
	}
}

// fakeSysfs builds /sys/bus/dsa/devices and /dev/dsa as the idxd driver
// would, with wq0.0 as a FIFO served by the model.
func fakeSysfs(t *testing.T, state string) (sys, dev string, m *dsamodel.Device) {
	dir := t.TempDir()
	sys, dev = filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
	write := func(p, v string) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(sys, "dsa0", "state"), "enabled")
	write(filepath.Join(sys, "dsa0", "gen_cap"), "0x40915f0107")
	for name, st := range map[string]string{"wq0.0": state, "wq0.1": "disabled"} {
		d := filepath.Join(sys, name)
		write(filepath.Join(d, "mode"), "dedicated")
		write(filepath.Join(d, "size"), "16")
		write(filepath.Join(d, "max_transfer_size"), "2097152")
		write(filepath.Join(d, "max_batch_size"), "32")
		write(filepath.Join(d, "state"), st)
		write(filepath.Join(d, "type"), "user")
		write(filepath.Join(d, "name"), "app1")
	}
	os.MkdirAll(dev, 0o755)
	m = dsamodel.New(dsamodel.Config{MaxTransfer: 2 << 20, Overlap: true, Readback: true, CacheCtl: true})
	t.Cleanup(func() { m.Close() })
	if err := m.Serve(filepath.Join(dev, "wq0.0")); err != nil {
		t.Fatal(err)
	}
	return sys, dev, m
}

func TestDSADiscoveryAndOpen(t *testing.T) {
	sys, dev, model := fakeSysfs(t, "enabled")
	wqs, err := FindWorkQueues(sys, dev)
	if err != nil || len(wqs) != 2 || wqs[0].Name != "wq0.0" || wqs[0].Unusable != "" || !strings.Contains(wqs[1].Unusable, "disabled") {
		t.Fatalf("%+v %v", wqs, err)
	}
	if wqs[0].MaxTransferSize != 2<<20 || wqs[0].Size != 16 || !wqs[0].Dedicated() || wqs[0].GenCap&genDestReadback == 0 {
		t.Fatalf("%+v", wqs[0])
	}
	cfg := Config{Engine: EngineDSA, DSA: DSAConfig{SysfsRoot: sys, DevRoot: dev, CPUBelow: -1}}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(m.Describe())
	if m.Name() != "dsa" || !strings.Contains(m.Describe(), "write()") {
		t.Fatal(m.Describe())
	}
	ctx := context.Background()
	src, dst := bytes.Repeat([]byte("rpstream"), 1000), make([]byte, 8000)
	if err := Copy(ctx, m, dst, src, Durable).Wait(ctx); err != nil || !bytes.Equal(dst, src) {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if st := model.Stats(); st.ViaWrite < 2 || st.Drains != 1 {
		t.Fatalf("%+v", st)
	}
	cfg.Engine = EngineAuto
	if m, err = New(cfg); err != nil || m.Name() != "dsa" {
		t.Fatalf("auto with a device: %v", err)
	}
	m.Close()
	cfg.Engine, cfg.DSA.Submit = EngineDSA, SubmitPortal
	if _, err := New(cfg); !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "portal") {
		t.Fatalf("portal on a FIFO: %v", err)
	}
}

func TestDSAUnusableQueue(t *testing.T) {
	sys, dev, _ := fakeSysfs(t, "disabled")
	_, err := New(Config{Engine: EngineDSA, DSA: DSAConfig{SysfsRoot: sys, DevRoot: dev}})
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "wq0.0: state \"disabled\"") {
		t.Fatalf("%v", err)
	}
	t.Log(err)
	m, err := New(Config{Engine: EngineAuto, InlineBelow: 1000, DSA: DSAConfig{SysfsRoot: sys, DevRoot: dev}})
	if err != nil || m.Name() != "cpu" || !strings.Contains(m.Describe(), "disabled") {
		t.Fatalf("auto: %v", err)
	}
	m.Close()
}

func TestCPUFeatures(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip(err)
	}
	var flags map[string]bool
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags = map[string]bool{}
			for _, f := range strings.Fields(v) {
				flags[f] = true
			}
			break
		}
	}
	if flags == nil {
		t.Skip("no flags line")
	}
	for name, have := range map[string]bool{"movdir64b": hasMOVDIR64B, "movdiri": hasMOVDIRI, "enqcmd": hasENQCMD, "waitpkg": hasWAITPKG} {
		if flags[name] != have {
			t.Errorf("%s: cpuid says %v, /proc/cpuinfo %v", name, have, flags[name])
		}
	}
}

func TestMOVDIR64B(t *testing.T) {
	if !hasMOVDIR64B {
		t.Skip("CPU lacks MOVDIR64B")
	}
	buf := make([]byte, 256)
	off := int((64 - uintptr(unsafe.Pointer(&buf[0]))%64) % 64)
	var d descriptor
	for i := range d {
		d[i] = byte(i + 1)
	}
	movdir64b(unsafe.Pointer(&buf[off]), unsafe.Pointer(&d))
	if !bytes.Equal(buf[off:off+64], d[:]) || buf[off+64] != 0 {
		t.Fatal("MOVDIR64B stored the wrong bytes")
	}
}

// Several goroutines at once, with faults and busy replies mixed in.
func TestDSAConcurrent(t *testing.T) {
	e, dev := newModelEngine(t, fullModel, "enqcmd", DSAConfig{MaxInflight: 8})
	dev.InjectFaults(50)
	dev.InjectBusy(50)
	ctx := context.Background()
	done := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func() {
			src, dst := make([]byte, 150000), make([]byte, 150000)
			for i := range src {
				src[i] = byte(i + g)
			}
			for i := 0; i < 40; i++ {
				n := 1 + (i*7919)%len(src)
				if err := Copy(ctx, e, dst[:n], src[:n], Durable).Wait(ctx); err != nil {
					done <- err
					return
				}
				if !bytes.Equal(dst[:n], src[:n]) {
					done <- errors.New("wrong bytes")
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if e.stats.faults.Load() == 0 || e.stats.busy.Load() == 0 {
		t.Fatalf("faults %d busy %d", e.stats.faults.Load(), e.stats.busy.Load())
	}
}

// A device that never completes: Close gives up with ErrDevice instead of
// hanging, and the request stays pending.
func TestDSAHungDeviceClose(t *testing.T) {
	old := closeTimeout
	closeTimeout = 50 * time.Millisecond
	defer func() { closeTimeout = old }()
	dev := dsamodel.New(fullModel)
	defer dev.Close()
	w, err := dev.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cfg := DefaultConfig()
	cfg.DSA.CPUBelow = -1
	cfg.fillDefaults()
	wq := WorkQueue{Name: "wq0.0", Mode: "dedicated", Size: 8, MaxTransferSize: fullModel.MaxTransfer, MaxBatchSize: 8, GenCap: fullModel.GenCap()}
	e, err := newDSAEngine(&cfg, wq, &fileSubmitter{fd: int(w.Fd()), name: "model pipe"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	dev.InjectDrop(1)
	op := Copy(context.Background(), e, make([]byte, 100), make([]byte, 100), 0)
	if err := e.Close(); !errors.Is(err, ErrDevice) {
		t.Fatalf("close: %v", err)
	}
	if !errors.Is(op.Err(), ErrPending) {
		t.Fatalf("op: %v", op.Err())
	}
}
