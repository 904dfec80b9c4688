package cli

import (
	"bytes"
	"flag"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestManPage: the manual page names every command and subcommand and
// every flag of each, and groff (where installed) reads it without a
// warning.
func TestManPage(t *testing.T) {
	page := manPage(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	if !strings.HasPrefix(page, `.TH STREAMCLI 1 "2026-12-06"`) {
		t.Fatalf("page starts %q", page[:min(len(page), 60)])
	}
	var walk func(cmds []*command)
	walk = func(cmds []*command) {
		for _, c := range cmds {
			if !strings.Contains(page, ".SS "+roffEscape("streamcli "+c.name+" ")) {
				t.Errorf("no section for %q", c.name)
			}
			if c.flags != nil {
				fs := newFlagSet(c.name)
				c.flags(fs)
				fs.VisitAll(func(f *flag.Flag) {
					if !strings.Contains(page, ".B \\-\\-"+roffEscape(f.Name)) {
						t.Errorf("%s: flag --%s missing", c.name, f.Name)
					}
				})
			}
			walk(c.subs)
		}
	}
	walk(commands)
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Log("groff is not installed: the page's roff is not checked")
		return
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("groff: %v\n%s", err, stderr.String())
	}
}
