package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/rpstream/rpstream/internal/validate"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/node"
)

// A node's files in embedded mode: --data may name a streamnode's data
// directory (or its streams/ or replicas/ directory, or a backup's), whose
// streams and copies live as
//
//	DIR/streams/NAME/{meta.json,data.stream}    streams the node leads
//	DIR/replicas/NAME/{meta.json,data.stream}   copies it holds for others
//
// Their entries carry the node's envelope (node/envelope.go: the kind,
// producer key and sequence before the data) and epoch markers: tail and
// ls show the data only, as the node does, at the same positions. They
// are read only: a node's file is written by its node alone.

// nodeStreamFile is the data file of a node's stream or copy.
const nodeStreamFile = "data.stream"

// nodeFile is a node's stream or copy found in the data directory.
type nodeFile struct {
	path     string
	envelope bool   // entries carry the node's envelope
	what     string // "copy" or "stream"
}

// nodeFile looks for stream name in a node's layout under d.
func (d dataDir) nodeFile(name string) (nodeFile, bool) {
	for _, dir := range []string{filepath.Join(d.dir, "streams", name), filepath.Join(d.dir, "replicas", name), filepath.Join(d.dir, name)} {
		b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
		if err != nil {
			continue
		}
		var m struct {
			Leader   string `json:"leader"`
			Envelope bool   `json:"envelope"`
		}
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		p := filepath.Join(dir, nodeStreamFile)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if m.Leader != "" {
			// A copy for another leader: always with envelopes.
			return nodeFile{path: p, envelope: true, what: "copy"}, true
		}
		return nodeFile{path: p, envelope: m.Envelope, what: "stream"}, true
	}
	return nodeFile{}, false
}

// resolve is the file of stream name for reading: DIR/NAME.stream, else a
// node's stream or copy of the name.
func (d dataDir) resolve(name string) (string, nodeFile, error) {
	path, err := d.path(name)
	if err != nil {
		return "", nodeFile{}, err
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if nf, ok := d.nodeFile(name); ok {
			return nf.path, nf, nil
		}
	}
	return path, nodeFile{}, nil
}

// nodeNames lists the streams and copies of a node's layout under d.
func (d dataDir) nodeNames() []string {
	var out []string
	for _, dir := range []string{filepath.Join(d.dir, "streams"), filepath.Join(d.dir, "replicas"), d.dir} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !e.IsDir() || validate.Name(e.Name()) != nil {
				continue
			}
			if _, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json")); err == nil && !slices.Contains(out, e.Name()) {
				out = append(out, e.Name())
			}
		}
	}
	slices.Sort(out)
	return out
}

// readOnlyNodeFile refuses a write to a node's file.
func readOnlyNodeFile(name string, nf nodeFile) error {
	return fmt.Errorf("stream %q here is a node's %s (%s): embedded mode only reads it; append through the node (--node HOST:PORT)", name, nf.what, nf.path)
}

// unwrapEntries turns an entry of a node's file into what a reader is
// shown: its data without the envelope; none for an epoch marker or a
// batch slot; the entries of a batch record, at the positions of its
// slots and its own.
func unwrapEntries(e local.Entry, nf nodeFile) ([]local.Entry, error) {
	if !nf.envelope {
		return []local.Entry{e}, nil
	}
	datas, err := node.Entries(e.Data)
	if err != nil {
		return nil, fmt.Errorf("entry %d of %s: %w", e.Index, nf.path, err)
	}
	out := make([]local.Entry, len(datas))
	for j, d := range datas {
		out[j] = local.Entry{Index: e.Index + 1 - uint64(len(datas)) + uint64(j), Data: d}
	}
	return out, nil
}
