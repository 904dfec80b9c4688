// Package scenario runs data-driven tests: stories in text files where
// each step is a command line, a "----" line, the expected output and a
// blank line; lines starting with # before a command are comments. A
// test package supplies what a command does; Run compares each output
// with the file, or rewrites the file with the actual outputs (the
// -rewrite flag of the calling test), to be reviewed as a diff.
package scenario

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Step is one command of a story and its expected output.
type Step struct {
	Comments []string
	Cmd      string
	Want     string
}

// Parse reads the story at path.
func Parse(path string) ([]Step, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var steps []Step
	var cur Step
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "#") {
			cur.Comments = append(cur.Comments, l)
			continue
		}
		if strings.TrimSpace(l) == "" {
			continue
		}
		cur.Cmd = l
		if i+1 >= len(lines) || lines[i+1] != "----" {
			return nil, fmt.Errorf("%s:%d: command without ----", path, i+1)
		}
		i += 2
		var out []string
		for ; i < len(lines) && lines[i] != ""; i++ {
			out = append(out, lines[i])
		}
		cur.Want = strings.Join(out, "\n")
		steps = append(steps, cur)
		cur = Step{}
	}
	return steps, nil
}

// Run runs the story at path, each command through do, and reports every
// output that differs from the file; with rewrite it writes the actual
// outputs back to the file instead.
func Run(t *testing.T, path string, rewrite bool, do func(cmd string) string) {
	t.Helper()
	steps, err := Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	failed := false
	for _, s := range steps {
		got := do(s.Cmd)
		for _, c := range s.Comments {
			out.WriteString(c + "\n")
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n\n", s.Cmd, got)
		if got != s.Want && !rewrite {
			t.Errorf("%s: %s\n got:\n%s\nwant:\n%s", path, s.Cmd, got, s.Want)
			failed = true
		}
	}
	if rewrite {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if failed {
		t.Log("run with -rewrite to accept the new output, and review the diff")
	}
}
