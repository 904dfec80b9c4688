package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	fs := newFlagSet("t")
	data := fs.String("data", "", "")
	f := fs.Bool("f", false, "")
	from := fs.String("from", "", "")
	pos, err := parseArgs(fs, []string{"s1", "--data", "d", "-f", "x", "--from", "-3", "--", "--y", "-f"})
	if err != nil {
		t.Fatal(err)
	}
	if *data != "d" || !*f || *from != "-3" || fmt.Sprint(pos) != "[s1 x --y -f]" {
		t.Errorf("data %q f %v from %q pos %q", *data, *f, *from, pos)
	}
	for args, want := range map[string]string{
		"--nope":       "unknown flag --nope",
		"s --data":     "flag --data needs a value",
		"-f=maybe":     "invalid boolean value",
		"--data=a -h":  "help requested",
		"--help s":     "help requested",
		"-from=1 -x=2": "unknown flag -x=2",
	} {
		_, err := parseArgs(newFlagSetLike(), strings.Fields(args))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseArgs(%q): %v, want %q", args, err, want)
		}
		var ue *usageError
		if !errors.Is(err, errHelp) && !errors.As(err, &ue) {
			t.Errorf("parseArgs(%q): %T is not a usage error", args, err)
		}
	}
}

func newFlagSetLike() *flag.FlagSet {
	fs := newFlagSet("t")
	fs.String("data", "", "")
	fs.Bool("f", false, "")
	fs.String("from", "", "")
	return fs
}

func TestStartAt(t *testing.T) {
	for _, c := range []struct {
		from            string
		head, committed uint64
		want            uint64
	}{
		{"", 0, 10, 0}, {"", 4, 10, 4}, {"7", 4, 10, 7}, {"-3", 0, 10, 7},
		{"-30", 4, 10, 4}, {"-0", 0, 10, 10}, {"20", 0, 10, 20},
	} {
		var p startAt
		if err := p.parse(c.from); err != nil {
			t.Fatal(err)
		}
		if got := p.resolve(c.head, c.committed); got != c.want {
			t.Errorf("--from %q over [%d,%d): %d, want %d", c.from, c.head, c.committed, got, c.want)
		}
	}
	var p startAt
	if err := p.parse("-x"); err == nil {
		t.Error("--from -x parsed")
	}
}

func TestStreamNames(t *testing.T) {
	d := dataDir{"/data"}
	for _, ok := range []string{"a", "s1", "my.stream_2-x", strings.Repeat("n", 128)} {
		if p, err := d.path(ok); err != nil || p != "/data/"+ok+".stream" {
			t.Errorf("path(%q) = %q, %v", ok, p, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "-dash", "a/b", "../x", "a b", "é", strings.Repeat("n", 129), "x\x00"} {
		if _, err := d.path(bad); err == nil {
			t.Errorf("path(%q) accepted", bad)
		}
	}
}

// TestMainInProcess runs commands through Main, so that the race detector
// and coverage see the command code itself.
func TestMainInProcess(t *testing.T) {
	d := t.TempDir()
	run := func(stdin string, args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb,
			Getenv: func(string) string { return "" }}, append(args, "--data", d))
		return out.String(), errb.String(), code
	}
	if _, e, c := run("", "create", "s"); c != 0 {
		t.Fatal(e)
	}
	if o, e, c := run("a\nb\n", "append", "s"); c != 0 || o != "0\n1\n" {
		t.Fatalf("append: %q %q %d", o, e, c)
	}
	if o, e, c := run("", "tail", "s", "--output", "json", "--from", "1"); c != 0 || o != `{"position":1,"size":1,"data":"Yg=="}`+"\n" {
		t.Fatalf("tail: %q %q %d", o, e, c)
	}
	if o, e, c := run("", "ls", "s"); c != 0 || !strings.Contains(o, "entries     2") {
		t.Fatalf("ls: %q %q %d", o, e, c)
	}
	if o, e, c := run("", "delete", "s"); c != 0 || o != `deleted stream "s" (removed `+d+"/s.stream)\n" {
		t.Fatalf("delete: %q %q %d", o, e, c)
	}
	if o, e, c := run("", "ls"); c != 0 || o != "" || e != "no streams in "+d+"\n" {
		t.Fatalf("ls after delete: %q %q %d", o, e, c)
	}
	if _, e, c := run("", "create", "s"); c != 0 {
		t.Fatal(e)
	}
	if _, e, c := run("a\nb\n", "append", "s"); c != 0 {
		t.Fatal(e)
	}
	// tail -f returns when its context ends, with success.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	if c := Main(ctx, Env{Stdout: &out, Stderr: &out, Getenv: os.Getenv}, []string{"tail", "-f", "s", "--data", d}); c != 0 || out.String() != "a\nb\n" {
		t.Errorf("tail -f: exit %d, %q", c, out.String())
	}
}
