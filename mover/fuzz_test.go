package mover

import (
	"os"
	"path/filepath"
	"testing"
)

// Sysfs attributes are outside input: whatever they hold, discovery must
// give a clear answer and never panic.
func FuzzReadWorkQueue(f *testing.F) {
	f.Add("dedicated", "16", "0x200000", "enabled", "user", "0x40915f0107")
	f.Add("shared", "-1", "99999999999999999999", "", "kernel", "zz")
	f.Fuzz(func(t *testing.T, mode, size, xfer, state, typ, gencap string) {
		dir := t.TempDir()
		wq := filepath.Join(dir, "wq0.0")
		os.MkdirAll(wq, 0o755)
		os.MkdirAll(filepath.Join(dir, "dsa0"), 0o755)
		for name, v := range map[string]string{"mode": mode, "size": size, "max_transfer_size": xfer, "state": state, "type": typ} {
			os.WriteFile(filepath.Join(wq, name), []byte(v), 0o644)
		}
		os.WriteFile(filepath.Join(dir, "dsa0", "gen_cap"), []byte(gencap), 0o644)
		wqs, err := FindWorkQueues(dir, filepath.Join(dir, "dev"))
		if err != nil || len(wqs) != 1 {
			t.Fatalf("%v %v", wqs, err)
		}
		if wqs[0].Size < 0 || wqs[0].MaxTransferSize < 0 || wqs[0].Unusable == "" {
			t.Fatalf("%+v", wqs[0]) // no /dev node: never usable
		}
	})
}

func FuzzParseEngine(f *testing.F) {
	for _, s := range []string{"sync", "CPU", " dsa", "auto", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEngine(s)
		if err == nil && e != EngineSync && e != EngineCPU && e != EngineDSA && e != EngineAuto {
			t.Fatalf("%q parsed to %q", s, e)
		}
	})
}

// Requests are outside input too: Validate must reject, never panic, and
// an engine must never be handed what Validate rejects.
func FuzzRequestValidate(f *testing.F) {
	f.Add(uint8(1), 10, 10, uint32(1), false)
	f.Fuzz(func(t *testing.T, kind uint8, nd, ns int, flags uint32, srcNil bool) {
		nd, ns = nd&0xffff, ns&0xffff
		r := Request{Kind: Kind(kind), Dst: make([]byte, nd), Flags: Flags(flags)}
		if !srcNil {
			r.Src = make([]byte, ns)
		}
		m := newSync("fuzz")
		if err := r.Validate(); err != nil {
			if m.Submit(t.Context(), r, nopCompleter{}) == nil {
				t.Fatal("engine accepted an invalid request")
			}
			return
		}
		if err := m.Submit(t.Context(), r, nopCompleter{}); err != nil {
			t.Fatal(err)
		}
	})
}

type nopCompleter struct{}

func (nopCompleter) Complete(uint64, error) {}
