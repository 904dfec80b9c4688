package remote

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rpstream/rpstream/internal/scenario"

	"github.com/rpstream/rpstream/rdma"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt with the actual output")

// TestScenarios runs the stories in testdata/*.txt. Each step is a command
// line, a "----" line and the expected output, then a blank line; lines
// starting with # between steps are comments. Commands:
//
//	dial W                  connect writer W
//	grant W EPOCH [NAME]    Grant; prints ok or the error
//	region W EPOCH K        ask for slot K; prints its offset and length
//	put W K OFF TEXT        write TEXT at OFF of W's slot K, flush to persistence
//	media K OFF N           the durable bytes of slot K
//	raw W [HEX]             send raw control bytes; prints the response code
//	close W                 close W's connection
//	epoch                   the target's epoch
//
// go test ./remote -run TestScenarios -rewrite regenerates the outputs;
// review the diff.
func TestScenarios(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenarios")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScenario(t, f) })
	}
}

func runScenario(t *testing.T, path string) {
	e := newEnv(t, nil)
	writers := map[string]*writer{}
	regions := map[string]Region{} // by writer and slot
	scenario.Run(t, path, *rewrite, func(cmd string) string { return e.do(t, cmd, writers, regions) })
}

func (e *env) do(t *testing.T, cmd string, ws map[string]*writer, rs map[string]Region) string {
	f := strings.Fields(cmd)
	num := func(i int) int {
		if i >= len(f) {
			t.Fatalf("%q: missing argument %d", cmd, i)
		}
		n, err := strconv.Atoi(f[i])
		if err != nil {
			t.Fatalf("%q: %v", cmd, err)
		}
		return n
	}
	w := func() *writer {
		if len(f) < 2 || ws[f[1]] == nil {
			t.Fatalf("%q: unknown writer", cmd)
		}
		return ws[f[1]]
	}
	switch f[0] {
	case "dial":
		ws[f[1]] = e.dial()
		return "ok"
	case "grant":
		name := ""
		if len(f) > 3 {
			name = f[3]
		}
		return result(w().cl.Grant(ctx(t), uint64(num(2)), name))
	case "region":
		r, err := w().cl.Region(ctx(t), uint64(num(2)), num(3))
		if err != nil {
			return result(err)
		}
		rs[f[1]+"/"+f[3]] = r
		return fmt.Sprintf("offset %d length %d", r.Offset, r.Desc.Len)
	case "put":
		r, ok := rs[f[1]+"/"+f[2]]
		if !ok {
			t.Fatalf("%q: no region %s for %s", cmd, f[2], f[1])
		}
		return result(w().put(t, r, num(3), []byte(strings.Join(f[4:], " "))))
	case "media":
		off := RegionOffset(num(1), regionSize) + num(2)
		return fmt.Sprintf("%q", e.sim.Media()[off:off+num(3)])
	case "raw":
		var arg string
		if len(f) > 2 {
			arg = f[2]
		}
		b, err := hex.DecodeString(arg)
		if err != nil {
			t.Fatalf("%q: %v", cmd, err)
		}
		resp, err := w().cl.Call(ctx(t), b)
		if err != nil {
			return result(err)
		}
		return fmt.Sprintf("code %v", resp.GetError().GetCode())
	case "close":
		w().conn.Close()
		return "ok"
	case "epoch":
		return strconv.FormatUint(e.target.Epoch(), 10)
	}
	t.Fatalf("unknown command %q", cmd)
	return ""
}

// result names an error by the sentinel it wraps, so that outputs do not
// depend on message text.
func result(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range []struct {
		err  error
		name string
	}{
		{ErrStaleEpoch, "stale epoch"}, {ErrNotWriter, "not the writer"}, {ErrNoRegion, "no region"},
		{ErrMalformed, "malformed"}, {rdma.ErrRemoteAccess, "remote access error"},
		{rdma.ErrPoisoned, "connection poisoned"}, {rdma.ErrClosed, "closed"},
	} {
		if errors.Is(err, s.err) {
			return "error: " + s.name
		}
	}
	return "error: " + err.Error()
}
