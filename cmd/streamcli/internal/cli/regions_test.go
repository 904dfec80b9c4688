package cli

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpstream/rpstream/local"
)

// TestReadRegions checks ls's reading of region headers against the
// writer's own Regions.
func TestReadRegions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.stream")
	w, err := local.Create(path, local.Options{RegionSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < 300; i++ {
		if _, err := w.Append(bytes.Repeat([]byte{'x'}, i*7%500)); err != nil {
			t.Fatal(err)
		}
		if i == 150 {
			if _, err := w.Trim(60); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := w.Regions()
	got, err := readRegions(path, w.RegionSize(), w.StreamID(), w.Committed())
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 3 || fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("readRegions:\n%+v\nRegions:\n%+v", got, want)
	}
}

// TestTailTrimmed: after retention freed the head, tail starts at the
// oldest entry left, and an explicit position before it is an error.
func TestTailTrimmed(t *testing.T) {
	d := t.TempDir()
	w, err := local.Create(filepath.Join(d, "s.stream"), local.Options{RegionSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := w.Append(bytes.Repeat([]byte{'a' + byte(i%26)}, 500)); err != nil {
			t.Fatal(err)
		}
	}
	head, err := w.Trim(50)
	if err != nil || head == 0 || head > 50 {
		t.Fatalf("Trim: head %d, %v", head, err)
	}
	w.Close()
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }},
			append(args, "--data", d))
		return out.String(), errb.String(), code
	}
	o, e, c := run("tail", "s", "--output", "json")
	if c != 0 || !strings.HasPrefix(o, fmt.Sprintf(`{"position":%d,`, head)) || strings.Count(o, "\n") != int(100-head) {
		t.Errorf("tail of a trimmed stream: exit %d, %d lines, stderr %q, first %.40q", c, strings.Count(o, "\n"), e, o)
	}
	if _, e, c := run("tail", "s", "--from", "0"); c != 1 || !strings.Contains(e, fmt.Sprintf("position 0 of stream \"s\" was trimmed: the oldest entry is %d", head)) {
		t.Errorf("tail --from 0 of a trimmed stream: exit %d, %q", c, e)
	}
	o, _, c = run("ls")
	if f := strings.Fields(o); c != 0 || len(f) < 14 || f[12] != fmt.Sprint(head) || f[13] != "100" {
		t.Errorf("ls of a trimmed stream: %q", o)
	}
}
