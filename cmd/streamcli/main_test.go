package main

// These tests build streamcli once and run it as a user would: separate
// processes, real files, exit codes and messages. Every process a test
// starts is ended by its PID before the test returns.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/internal/proccluster"
	"github.com/rpstream/rpstream/internal/testutil"
)

var bin string // the streamcli binary under test

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "streamcli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "streamcli")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	proccluster.RemoveBuilt()
	os.Exit(code)
}

// env is the environment of a streamcli process: the race detector's
// one-second pause at exit is turned off.
func env(extra ...string) []string {
	return append(os.Environ(), append([]string{"GORACE=atexit_sleep_ms=0"}, extra...)...)
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs streamcli with args and stdin, in a clean environment, and
// waits at most 30 s for it.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env("RPSTREAM_DATA=")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{out.String(), errb.String(), 0}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("streamcli %q: %v", args, err)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic:") {
		t.Fatalf("streamcli %q printed a Go stack trace:\n%s", args, r.stderr)
	}
	return r
}

// ok runs streamcli and fails the test unless it exits 0.
func ok(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := run(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("streamcli %q: exit %d\nstderr: %s", args, r.code, r.stderr)
	}
	return r.stdout
}

// fails runs streamcli and checks its exit code and that stderr holds
// every one of want.
func fails(t *testing.T, code int, stdin string, args []string, want ...string) result {
	t.Helper()
	r := run(t, stdin, args...)
	if r.code != code {
		t.Fatalf("streamcli %q: exit %d, want %d\nstderr: %s", args, r.code, code, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("streamcli %q: stderr does not say %q:\n%s", args, w, r.stderr)
		}
	}
	return r
}

func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func positions(t *testing.T, out string) []uint64 {
	t.Helper()
	var ps []uint64
	for _, l := range lines(out) {
		p, err := strconv.ParseUint(l, 10, 64)
		if err != nil {
			t.Fatalf("append printed %q, not a position", l)
		}
		ps = append(ps, p)
	}
	return ps
}

type jsonEntry struct {
	Position uint64 `json:"position"`
	Data     string `json:"data"`
}

func parseJSON(t *testing.T, out string) (pos []uint64, data []string) {
	t.Helper()
	for _, l := range lines(out) {
		var e jsonEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("tail --output json printed %q: %v", l, err)
		}
		b, err := base64.StdEncoding.DecodeString(e.Data)
		if err != nil {
			t.Fatalf("data of %q is not standard base64: %v", l, err)
		}
		pos, data = append(pos, e.Position), append(data, string(b))
	}
	return pos, data
}

func TestRoundTrip(t *testing.T) {
	d := t.TempDir()
	ok(t, "", "create", "s1", "--data", d)
	if got := positions(t, ok(t, "", "append", "s1", "--data", d, "hello", "world")); fmt.Sprint(got) != "[0 1]" {
		t.Fatalf("append of two messages printed %v", got)
	}
	// Flags before the command, lines of stdin (an empty line, no final
	// newline).
	if got := positions(t, ok(t, "one\n\nthree", "--data", d, "append", "s1")); fmt.Sprint(got) != "[2 3 4]" {
		t.Fatalf("append of three lines printed %v", got)
	}
	binData := "bin\x00ary\nwith newline\n"
	if got := positions(t, ok(t, binData, "append", "--binary", "s1", "--data="+d)); fmt.Sprint(got) != "[5]" {
		t.Fatalf("append --binary printed %v", got)
	}
	want := []string{"hello", "world", "one", "", "three", binData}

	text := ok(t, "", "tail", "s1", "--data", d)
	if text != strings.Join(want, "\n")+"\n" {
		t.Errorf("tail printed %q", text)
	}
	pos, data := parseJSON(t, ok(t, "", "--data", d, "tail", "--output", "json", "s1"))
	if fmt.Sprint(pos) != "[0 1 2 3 4 5]" || fmt.Sprintf("%q", data) != fmt.Sprintf("%q", want) {
		t.Errorf("tail --output json: positions %v data %q", pos, data)
	}
	pos, _ = parseJSON(t, ok(t, "", "tail", "s1", "--from", "4", "--output=json", "--data", d))
	if fmt.Sprint(pos) != "[4 5]" {
		t.Errorf("tail --from 4: positions %v", pos)
	}
	pos, _ = parseJSON(t, ok(t, "", "tail", "s1", "--from", "-2", "--output", "json", "--data", d))
	if fmt.Sprint(pos) != "[4 5]" {
		t.Errorf("tail --from -2: positions %v", pos)
	}
	// "--" ends the flags: a message may start with a dash.
	if got := positions(t, ok(t, "", "append", "--data", d, "s1", "--", "--not-a-flag")); fmt.Sprint(got) != "[6]" {
		t.Errorf("append -- --not-a-flag printed %v", got)
	}
	// $RPSTREAM_DATA is the default data directory.
	cmd := exec.Command(bin, "tail", "s1", "--from", "6")
	cmd.Env = env("RPSTREAM_DATA=" + d)
	if out, err := cmd.Output(); err != nil || string(out) != "--not-a-flag\n" {
		t.Errorf("tail with RPSTREAM_DATA: %q, %v", out, err)
	}
}

func TestLongLines(t *testing.T) {
	d := t.TempDir()
	ok(t, "", "create", "big", "--region-size", "1MiB", "--data", d)
	long := strings.Repeat("x", 300<<10) // longer than bufio.Scanner's 64 KiB
	in := "short\n" + long + "\nend\n"
	if got := positions(t, ok(t, in, "append", "big", "--data", d)); len(got) != 3 {
		t.Fatalf("append printed %v", got)
	}
	if out := ok(t, "", "tail", "big", "--data", d); out != in {
		t.Errorf("tail gave %d bytes back, want %d", len(out), len(in))
	}

	ok(t, "", "create", "small", "--region-size", "16k", "--data", d)
	r := fails(t, 1, "a\n"+strings.Repeat("y", 20000)+"\n", []string{"append", "small", "--data", d},
		"line 2 is", "larger than the largest entry", "--region-size")
	// The line before the one too large was appended, and said so.
	if got := positions(t, r.stdout); fmt.Sprint(got) != "[0]" {
		t.Errorf("append printed %v before failing", got)
	}
	fails(t, 1, strings.Repeat("z", 20000), []string{"append", "--binary", "small", "--data", d}, "larger than the largest entry")
}

func TestTailFollow(t *testing.T) {
	d := t.TempDir()
	// Small regions, so that the entries cross region boundaries.
	ok(t, "", "create", "f", "--region-size", "16k", "--data", d)
	ok(t, "", "append", "f", "--data", d, "before")

	tail := exec.Command(bin, "tail", "-f", "f", "--data", d, "--output", "json")
	stdout, err := tail.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	tail.Stderr = &stderr
	tail.Env = env()
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	defer func() {
		syscall.Kill(tail.Process.Pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}()
	got := make(chan jsonEntry, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e jsonEntry
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				got <- e
			}
		}
		done <- tail.Wait()
	}()
	expect := func(pos uint64, data string) {
		t.Helper()
		select {
		case e := <-got:
			b, _ := base64.StdEncoding.DecodeString(e.Data)
			if e.Position != pos || string(b) != data {
				t.Fatalf("tail -f printed position %d %.20q, want %d %.20q", e.Position, b, pos, data)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("tail -f did not print position %d in 15 s; stderr: %s", pos, stderr.String())
		}
	}
	expect(0, "before")
	// Another process appends while tail follows: 40 entries of 1 KiB
	// fill a few 16 KiB regions.
	var in strings.Builder
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&in, "%04d%s\n", i, strings.Repeat("e", 1020))
	}
	ok(t, in.String(), "append", "f", "--data", d)
	for i := 1; i <= 40; i++ {
		expect(uint64(i), fmt.Sprintf("%04d%s", i, strings.Repeat("e", 1020)))
	}
	ok(t, "", "append", "f", "--data", d, "after")
	expect(41, "after")
	if regions := lines(ok(t, "", "ls", "f", "--data", d)); len(regions) < 10 {
		t.Errorf("ls f shows too few regions for entries across regions:\n%s", strings.Join(regions, "\n"))
	}

	// SIGTERM ends tail -f normally.
	if err := syscall.Kill(tail.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("tail -f after SIGTERM: %v, want exit 0; stderr: %s", err, stderr.String())
		}
		done <- nil // for the deferred kill
	case <-time.After(10 * time.Second):
		t.Fatal("tail -f did not exit within 10 s of SIGTERM")
	}
}

func TestErrors(t *testing.T) {
	d := t.TempDir()
	ok(t, "", "create", "s", "--data", d)
	for _, args := range [][]string{{"append", "nope", "x"}, {"tail", "nope"}, {"ls", "nope"}} {
		fails(t, 1, "", append(args, "--data", d), `stream "nope" does not exist in `+d)
	}
	fails(t, 2, "", []string{"tail", "s", "--data", d, "--bogus"}, "unknown flag --bogus", "usage: streamcli tail")
	fails(t, 2, "", []string{"tail", "s", "--data", d, "--output", "xml"}, "--output must be text or json")
	fails(t, 2, "", []string{"tail", "s", "--data", d, "--from", "x"}, "--from must be")
	fails(t, 2, "", []string{"tail", "--data", d}, "one stream name")
	fails(t, 2, "", []string{"frobnicate"}, `unknown command "frobnicate"`)
	fails(t, 2, "", []string{}, "no command given")
	fails(t, 2, "", []string{"create", "../evil", "--data", d}, "invalid stream name")
	fails(t, 2, "", []string{"create", "x", "--region-size", "lots", "--data", d}, `invalid size "lots"`)
	fails(t, 2, "", []string{"create", "x", "--region-size", "5000", "--data", d}, "multiple of 4096")
	fails(t, 1, "", []string{"create", "s", "--data", d}, `stream "s" already exists`)
	fails(t, 2, "", []string{"append", "s", "--binary", "msg", "--data", d}, "give no messages")
	fails(t, 2, "", []string{"bench", "warp"}, `unknown kind "warp"`)
	fails(t, 2, "", []string{"bench", "local", "--count", "0"}, "count must be at least 1")
	if r := run(t, "", "tail", "-h"); r.code != 0 || !strings.Contains(r.stderr, "usage: streamcli tail") {
		t.Errorf("tail -h: exit %d, stderr %s", r.code, r.stderr)
	}
	if r := run(t, "", "--help"); r.code != 0 || !strings.Contains(r.stderr, "commands:") {
		t.Errorf("--help: exit %d, stderr %s", r.code, r.stderr)
	}
}

func TestCorrupt(t *testing.T) {
	d := t.TempDir()
	ok(t, "", "create", "c", "--data", d)
	ok(t, "", "append", "c", "--data", d, "a", "b")
	path := filepath.Join(d, "c.stream")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Damage the region size in the superblock: its checksum fails.
	var b [1]byte
	f.ReadAt(b[:], 17)
	b[0] ^= 0x40
	f.WriteAt(b[:], 17)
	f.Close()
	for _, args := range [][]string{{"tail", "c"}, {"append", "c", "x"}, {"ls", "c"}} {
		fails(t, 1, "", append(args, "--data", d), "stream file "+path+" is corrupt", "checksum")
	}
	r := fails(t, 1, "", []string{"ls", "--data", d}, "is corrupt")
	if !strings.Contains(r.stdout, "c ") {
		t.Errorf("ls does not list the corrupt stream:\n%s", r.stdout)
	}

	// A file of another format.
	os.WriteFile(filepath.Join(d, "other.stream"), bytes.Repeat([]byte("not a stream "), 400), 0o644)
	fails(t, 1, "", []string{"tail", "other", "--data", d}, "is not an rpstream stream file")

	// delete removes only what it can open as a stream.
	fails(t, 1, "", []string{"delete", "c", "--data", d}, "stream file "+path+" is corrupt", "not deleted", "by hand")
	fails(t, 1, "", []string{"delete", "other", "--data", d}, "is not an rpstream stream file", "not deleted")
	for _, f := range []string{path, filepath.Join(d, "other.stream")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("a refused delete removed %s: %v", f, err)
		}
	}
}

func TestLocked(t *testing.T) {
	d := t.TempDir()
	ok(t, "", "create", "l", "--data", d)
	ok(t, "", "append", "l", "--data", d, "first")
	// A writer that holds the lock: append waiting on its standard input.
	w := exec.Command(bin, "append", "l", "--data", d)
	w.Env = env()
	in, err := w.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := w.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			syscall.Kill(w.Process.Pid, syscall.SIGKILL)
			w.Wait()
		}
	}()
	// Once it printed the position of a line, it holds the lock.
	fmt.Fprintln(in, "second")
	if l, err := bufio.NewReader(out).ReadString('\n'); err != nil || l != "1\n" {
		t.Fatalf("writer printed %q, %v", l, err)
	}
	fails(t, 1, "", []string{"append", "l", "--data", d, "x"}, `stream "l" is locked`, "another process")
	// Nor is a stream deleted under its writer.
	fails(t, 1, "", []string{"delete", "l", "--data", d}, `stream "l" is locked`, "another process")
	// Readers need no lock.
	if got := ok(t, "", "tail", "l", "--data", d); got != "first\nsecond\n" {
		t.Errorf("tail beside a writer: %q", got)
	}
	if got := ok(t, "", "ls", "--data", d); !strings.Contains(got, "l ") {
		t.Errorf("ls beside a writer:\n%s", got)
	}
	in.Close()
	waited = true
	if err := w.Wait(); err != nil {
		t.Errorf("writer: %v", err)
	}
}

func TestLs(t *testing.T) {
	d := t.TempDir()
	if r := run(t, "", "ls", "--data", filepath.Join(d, "none")); r.code != 1 || !strings.Contains(r.stderr, "does not exist") {
		t.Errorf("ls of a missing directory: exit %d, %s", r.code, r.stderr)
	}
	ok(t, "", "create", "a", "--data", d)
	ok(t, "", "create", "b", "--region-size", "16k", "--data", d)
	var in strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&in, "%0500d\n", i)
	}
	ok(t, in.String(), "append", "b", "--data", d)
	out := lines(ok(t, "", "ls", "--data", d))
	if len(out) != 3 || !strings.HasPrefix(out[0], "STREAM") {
		t.Fatalf("ls:\n%s", strings.Join(out, "\n"))
	}
	fields := strings.Fields(out[2])
	// b: regions, head, next, entries, on disk, region size, persist.
	if fields[0] != "b" || fields[2] != "0" || fields[3] != "100" || fields[4] != "100" || fields[6] != "16KiB" {
		t.Errorf("ls line of b: %q", out[2])
	}
	if n, _ := strconv.Atoi(fields[1]); n < 3 {
		t.Errorf("ls: b has %s regions, want at least 3 (100 entries of 504 bytes in 16 KiB regions)", fields[1])
	}
	one := ok(t, "", "ls", "b", "--data", d)
	var sum uint64
	var rows int
	sc := bufio.NewScanner(strings.NewReader(one[strings.Index(one, "SEQ"):]))
	sc.Scan()
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		c, _ := strconv.ParseUint(f[3], 10, 64)
		if first, _ := strconv.ParseUint(f[2], 10, 64); first != sum {
			t.Errorf("region row %q starts at %d, want %d", sc.Text(), first, sum)
		}
		sum += c
		rows++
	}
	if sum != 100 || rows != n(fields[1]) {
		t.Errorf("ls b: %d entries in %d regions:\n%s", sum, rows, one)
	}
}

func n(s string) int { v, _ := strconv.Atoi(s); return v }

func TestBenchJSON(t *testing.T) {
	out := ok(t, "", "bench", "local", "--count", "2000", "--size", "64", "--writers", "4", "--dir", t.TempDir(), "--json")
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bench --json printed %q: %v", out, err)
	}
	for _, k := range []string{"entries_per_sec", "mb_per_sec", "p50_us", "p99_us", "p999_us", "count", "size", "writers", "mode", "seconds"} {
		if _, ok := r[k]; !ok {
			t.Errorf("bench --json has no %q: %s", k, out)
		}
	}
	if r["count"] != 2000.0 || r["entries_per_sec"].(float64) <= 0 {
		t.Errorf("bench --json: %s", out)
	}
	// Text output, and the temporary files are gone.
	dir := t.TempDir()
	if out := ok(t, "", "bench", "local", "--count", "100", "--dir", dir); !strings.Contains(out, "entries/s") {
		t.Errorf("bench local printed %q", out)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("bench left %d files in %s", len(ents), dir)
	}
}

func TestBenchRdmaJSON(t *testing.T) {
	out := ok(t, "", "bench", "rdma", "--size", "64", "--inflight", "4", "--duration", "100ms", "--json")
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bench rdma --json printed %q: %v", out, err)
	}
	for _, k := range []string{"p50_us", "p99_us", "mb_per_sec", "raw_p50_us", "raw_mb_per_sec"} {
		if v, ok := r[k].(float64); !ok || v <= 0 {
			t.Errorf("bench rdma --json: %q is %v: %s", k, r[k], out)
		}
	}
	fails(t, 2, "", []string{"bench", "rdma", "--size", "0"}, "size must be from 1 byte")
}

func TestFullDisk(t *testing.T) {
	d := testutil.SmallFS(t, "512k")
	ok(t, "", "create", "full", "--region-size", "64k", "--data", d)
	var in strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&in, "%01000d\n", i)
	}
	r := fails(t, 1, in.String(), []string{"append", "full", "--data", d}, "disk holding "+d+" is full", "nothing appended earlier is lost")
	printed := positions(t, r.stdout)
	if len(printed) == 0 || len(printed) >= 1000 {
		t.Fatalf("append on a full disk printed %d positions", len(printed))
	}
	// Every printed entry is there, byte-exact.
	got := lines(ok(t, "", "tail", "full", "--data", d))
	if len(got) != len(printed) {
		t.Fatalf("tail after a full disk: %d entries, append printed %d", len(got), len(printed))
	}
	for i, l := range got {
		if l != fmt.Sprintf("%01000d", i) {
			t.Fatalf("entry %d after a full disk: %.30q", i, l)
		}
	}
	// Still full: a new append fails with the same message and loses nothing.
	fails(t, 1, "", []string{"append", "full", "--data", d, strings.Repeat("m", 60000)}, "is full")
	if n := len(lines(ok(t, "", "tail", "full", "--data", d))); n != len(printed) {
		t.Errorf("after a second failed append: %d entries, want %d", n, len(printed))
	}
	// A new stream needs a page (its first region comes with its first
	// append): the create fails, leaving nothing, or the append does.
	if r := run(t, "", "create", "another", "--data", d); r.code == 0 {
		fails(t, 1, "", []string{"append", "another", "--data", d, "x"}, "is full")
		if n := len(lines(ok(t, "", "tail", "another", "--data", d))); n != 0 {
			t.Errorf("a failed first append left %d entries", n)
		}
	} else {
		fails(t, 1, "", []string{"create", "another", "--data", d}, "is full", `cannot create stream "another"`)
		if _, err := os.Stat(filepath.Join(d, "another.stream")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed create left its file: %v", err)
		}
	}
	if n := len(lines(ok(t, "", "tail", "full", "--data", d))); n != len(printed) {
		t.Errorf("after creating another stream: %d entries, want %d", n, len(printed))
	}
}

// TestAppendSignal: an append waiting on its standard input ends on
// SIGTERM (only tail -f and bench stop gracefully), and what it printed
// stays appended.
func TestAppendSignal(t *testing.T) {
	d := t.TempDir()
	ok(t, "", "create", "s", "--data", d)
	w := exec.Command(bin, "append", "s", "--data", d)
	w.Env = env()
	in, _ := w.StdinPipe()
	out, _ := w.StdoutPipe()
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	fmt.Fprintln(in, "kept")
	if l, err := bufio.NewReader(out).ReadString('\n'); err != nil || l != "0\n" {
		t.Fatalf("append printed %q, %v", l, err)
	}
	go func() { done <- w.Wait() }()
	syscall.Kill(w.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Errorf("append after SIGTERM: %v, want killed by SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		syscall.Kill(w.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatal("append waiting on stdin ignored SIGTERM")
	}
	in.Close()
	if got := ok(t, "", "tail", "s", "--data", d); got != "kept\n" {
		t.Errorf("after SIGTERM: %q", got)
	}
}
