package main

// Scenario tests as data: each testdata/*.txt file is a session of
// streamcli commands in a fresh data directory, with what each printed.
//
//	# a comment
//	$ append s1            a command (arguments split on blanks; "quoted
//	< line one             words" stay whole); "< " lines are its stdin
//	0                      its standard output
//	2> streamcli: ...      its standard error, prefixed "2> "
//	[exit 1]               its exit code, when not 0
//
// The data directory reads $DATA. Run with -rewrite to write the files
// from what streamcli prints now, and review the diff.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt with the output of streamcli")

func TestScripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no testdata/*.txt")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type step struct {
	comments []string // lines before the command
	args     []string
	cmdline  string
	stdin    []string
	want     string
}

func parseScript(t *testing.T, text string) (steps []*step, trailing []string) {
	var cur *step
	var pending []string
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "$ "):
			cur = &step{comments: pending, cmdline: l[2:], args: splitArgs(t, l[2:])}
			pending = nil
			steps = append(steps, cur)
		case strings.HasPrefix(l, "#") && (cur == nil || cur.want == "" || strings.HasSuffix(cur.want, "\n\n")):
			pending = append(pending, l)
		case cur != nil && (l == "<" || strings.HasPrefix(l, "< ")) && cur.want == "":
			cur.stdin = append(cur.stdin, strings.TrimPrefix(l[1:], " "))
		case cur != nil:
			cur.want += l + "\n"
		default:
			pending = append(pending, l)
		}
	}
	for _, s := range steps {
		s.want = strings.TrimRight(s.want, "\n")
	}
	return steps, pending
}

// splitArgs splits on blanks, keeping "double-quoted words" whole.
func splitArgs(t *testing.T, s string) []string {
	var args []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			k := strings.IndexByte(s[1:], '"')
			if k < 0 {
				t.Fatalf("unterminated quote in %q", s)
			}
			args = append(args, s[1:k+1])
			s = s[k+2:]
			continue
		}
		k := strings.IndexAny(s, " \t")
		if k < 0 {
			k = len(s)
		}
		args = append(args, s[:k])
		s = s[k:]
	}
	return args
}

func runScript(t *testing.T, file string) {
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	steps, trailing := parseScript(t, string(text))
	// A script that says so compares files' sizes on disk loosely: the
	// blocks a file system gives a file that was trimmed (holes punched)
	// vary by a page from run to run.
	loose := strings.Contains(string(text), "# on-disk sizes vary")
	data := t.TempDir()
	var out strings.Builder
	for _, s := range steps {
		for _, c := range s.comments {
			out.WriteString(c + "\n")
		}
		got := runStep(t, data, s)
		out.WriteString("$ " + s.cmdline + "\n")
		for _, l := range s.stdin {
			out.WriteString(strings.TrimRight("< "+l, " ") + "\n")
		}
		if got != "" {
			out.WriteString(got + "\n")
		}
		out.WriteString("\n")
		if !*rewrite && got != s.want && !(loose && onDisk.ReplaceAllString(got, "(_ on disk") == onDisk.ReplaceAllString(s.want, "(_ on disk")) {
			t.Errorf("%s: $ %s\ngot:\n%s\nwant:\n%s", file, s.cmdline, got, s.want)
		}
	}
	for _, c := range trailing {
		out.WriteString(c + "\n")
	}
	if *rewrite {
		if err := os.WriteFile(file, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// onDisk matches a size on disk as ls prints it.
var onDisk = regexp.MustCompile(`\(\d+(\.\d+)?[KMGT]?i?B on disk`)

func runStep(t *testing.T, data string, s *step) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := make([]string, len(s.args))
	for i, a := range s.args {
		args[i] = strings.ReplaceAll(a, "$DATA", data)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	// Persist by msync everywhere, so that ls prints the same mode on any
	// file system.
	cmd.Env = env("RPSTREAM_DATA="+data, "RPSTREAM_PMEM_FORCE=0")
	if s.stdin != nil {
		cmd.Stdin = strings.NewReader(strings.Join(s.stdin, "\n") + "\n")
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("$ %s: %v", s.cmdline, err)
	}
	var b strings.Builder
	b.WriteString(stdout.String())
	for _, l := range strings.SplitAfter(stderr.String(), "\n") {
		if l != "" {
			b.WriteString("2> " + l)
		}
	}
	if code != 0 {
		b.WriteString("[exit " + strconv.Itoa(code) + "]\n")
	}
	return strings.ReplaceAll(strings.TrimRight(b.String(), "\n"), data, "$DATA")
}
