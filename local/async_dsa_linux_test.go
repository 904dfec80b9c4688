//go:build linux

package local_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/mover"
	"github.com/rpstream/rpstream/mover/dsamodel"
)

// dsaModelEngine starts the dsa engine through its public path — sysfs
// discovery, opening /dev/dsa/wq0.0, write() of descriptors — on a fake
// tree whose queue file is a FIFO served by the software device model
// (mover/dsamodel). Everything goes to the device (CPUBelow -1), split
// at a 64 KiB maximum transfer. Nothing here touches real hardware.
func dsaModelEngine(t testing.TB) (engine, bool) {
	t.Helper()
	mc := dsamodel.Config{MaxTransfer: 64 << 10, Overlap: true, Readback: true, CacheCtl: true, Seed: 7}
	dir := t.TempDir()
	sys, dev := filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
	write := func(p, v string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(sys, "dsa0", "state"), "enabled")
	write(filepath.Join(sys, "dsa0", "gen_cap"), fmt.Sprintf("%#x", mc.GenCap()))
	wq := filepath.Join(sys, "wq0.0")
	for f, v := range map[string]string{"mode": "dedicated", "size": "32", "max_transfer_size": fmt.Sprint(mc.MaxTransfer),
		"max_batch_size": "32", "state": "enabled", "type": "user", "name": "rpstream-test"} {
		write(filepath.Join(wq, f), v)
	}
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	model := dsamodel.New(mc)
	if err := model.Serve(filepath.Join(dev, "wq0.0")); err != nil {
		model.Close()
		t.Fatal(err)
	}
	m, err := mover.New(mover.Config{Engine: mover.EngineDSA, DSA: mover.DSAConfig{
		SysfsRoot: sys, DevRoot: dev, Submit: mover.SubmitWrite, CPUBelow: -1}})
	if err != nil {
		model.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		model.Close()
		if err := model.Err(); err != nil {
			t.Errorf("the DSA model saw a violation: %v", err)
		}
	})
	inject := func() {
		model.InjectFaults(3)
		model.InjectError(dsamodel.StatusXferRange)
	}
	return engine{name: "dsa-model-write", m: m, inject: inject}, true
}
