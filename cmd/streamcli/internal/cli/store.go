package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rpstream/rpstream/internal/validate"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem"
)

// A data directory holds one file per stream, DIR/NAME.stream. There is no
// other state: ls lists the files, and every command opens the file it
// names.

// streamExt is the file name extension of a stream in a data directory.
const streamExt = ".stream"

// dataDir is where the streams of one invocation live.
type dataDir struct{ dir string }

// path returns the file of stream name, after checking the name.
func (d dataDir) path(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	return filepath.Join(d.dir, name+streamExt), nil
}

// checkName refuses (bad usage) a stream name a node would refuse: the
// rule is validate.Name's, in embedded and node mode alike.
func checkName(name string) error {
	if validate.Name(name) != nil {
		return usagef("invalid stream name %q: use %s", name, validate.NameRule)
	}
	return nil
}

// names lists the streams of the directory, sorted.
func (d dataDir) names() ([]string, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("data directory %s does not exist (streamcli create makes it)", d.dir)
		}
		return nil, fmt.Errorf("read data directory: %w", err)
	}
	var out []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), streamExt)
		if ok && e.Type().IsRegular() && validate.Name(n) == nil {
			out = append(out, n)
		}
	}
	// A node's data directory: its streams and copies (nodefile.go).
	for _, n := range d.nodeNames() {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// openWriter opens stream name for appending; it takes the writer lock.
func (d dataDir) openWriter(name string) (*local.Stream, error) {
	path, err := d.path(name)
	if err != nil {
		return nil, err
	}
	if err := d.mustExist(name, path); err != nil {
		if nf, ok := d.nodeFile(name); ok {
			return nil, readOnlyNodeFile(name, nf)
		}
		return nil, err
	}
	// One command appends and exits: no region prepared ahead for it.
	s, err := local.Open(path, local.Options{SpareRegions: -1})
	if err != nil {
		return nil, d.explain(name, path, err)
	}
	return s, nil
}

// openReader opens stream name read-only. It never takes the writer lock,
// so it works beside a writer in another process and follows it.
func (d dataDir) openReader(name string) (*local.Stream, error) {
	path, _, err := d.resolve(name)
	if err != nil {
		return nil, err
	}
	if err := d.mustExist(name, path); err != nil {
		return nil, err
	}
	s, err := local.OpenReader(path, local.Options{})
	if err != nil {
		return nil, d.explain(name, path, err)
	}
	return s, nil
}

func (d dataDir) mustExist(name, path string) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return d.notExist(name)
		}
		return fmt.Errorf("stream %q: %w", name, err)
	}
	return nil
}

func (d dataDir) notExist(name string) error {
	return fmt.Errorf("stream %q does not exist in %s (create it with: streamcli create %s)", name, d.dir, name)
}

// explain turns an error of package local about stream name into a
// one-line message that says what happened and what to do.
func (d dataDir) explain(name, path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return d.notExist(name)
	case errors.Is(err, local.ErrLocked):
		return fmt.Errorf("stream %q is locked: another process is appending to it (%s); only one writer at a time, try again when it exits", name, path)
	case errors.Is(err, local.ErrCorrupt):
		d := strings.ReplaceAll(detail(err), "open "+path+": ", "")
		d = strings.ReplaceAll(d, strings.TrimPrefix(local.ErrCorrupt.Error(), "local: ")+": ", "")
		return fmt.Errorf("stream file %s is corrupt: %s", path, d)
	case errors.Is(err, local.ErrNotStream):
		return fmt.Errorf("%s is not an rpstream stream file (corrupt or another format): %s", path, detail(err))
	case errors.Is(err, local.ErrVersion):
		return fmt.Errorf("stream file %s has a format version this streamcli does not know: %s", path, detail(err))
	case errors.Is(err, local.ErrNoSpace), errors.Is(err, pmem.ErrNoSpace):
		return fmt.Errorf("the disk holding %s is full: stream %q cannot grow; nothing appended earlier is lost, free some space and retry (%s)", d.dir, name, detail(err))
	case errors.Is(err, local.ErrTrimmed):
		return fmt.Errorf("stream %q: %s", name, detail(err))
	case errors.Is(err, local.ErrFailed):
		return fmt.Errorf("stream %q failed to persist (%s); what was appended before this command is safe, reopen to recover", name, detail(err))
	}
	return fmt.Errorf("stream %q: %s", name, detail(err))
}

// detail is the message of err without the package prefixes ("local: ",
// "pmem: ") that mean nothing to a user.
func detail(err error) string {
	s := err.Error()
	for _, p := range []string{"local: ", "pmem: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}
