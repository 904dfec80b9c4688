package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// The push/pull state: which members this member holds left. memberlist
// runs Leave's flag update and its leave message as two broadcasts, and
// the second cancels what is left of the first in every queue it reaches.
// On a loaded machine a member can therefore get the leave message before
// (or without) the flag and report a member that left as dead, and
// memberlist, which knows better (the leave message names its sender),
// does not say so (see the package comment). Every member that did see
// the flag lists the member in its push/pull state; a member that holds it
// dead at the same gossip address marks it left when it merges that state.
//
//	+---------+-----------------+------------------------------------------+
//	| version | count (uvarint) | count × (name, gossip host:port): strings |
//	+---------+-----------------+------------------------------------------+
//
// A string is a uvarint length (at most maxLeftString) and its bytes.
// version is 1; count is at most maxLeftEntries; nothing follows the last
// entry. Members of older versions send no state and ignore this one.
const (
	leftStateVersion = 1
	maxLeftEntries   = 64  // the members that left last
	maxLeftString    = 255 // bounds a name or address
)

var errBadLeftState = errors.New("cluster: bad push/pull state")

// leftEntry is one member that left.
type leftEntry struct {
	name, addr string
	at         time.Time // when this member learned it; not sent
}

// encodeLeftState encodes up to maxLeftEntries of es, the latest first.
func encodeLeftState(es []leftEntry) []byte {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b leftEntry) int { return b.at.Compare(a.at) })
	var keep []leftEntry
	for _, e := range es {
		if len(keep) == maxLeftEntries {
			break
		}
		if len(e.name) <= maxLeftString && len(e.addr) <= maxLeftString {
			keep = append(keep, e)
		}
	}
	b := []byte{leftStateVersion}
	b = binary.AppendUvarint(b, uint64(len(keep)))
	for _, e := range keep {
		for _, s := range []string{e.name, e.addr} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	return b
}

// parseLeftState decodes encodeLeftState's bytes; anything else fails
// with errBadLeftState.
func parseLeftState(b []byte) ([]leftEntry, error) {
	if len(b) < 1 || b[0] != leftStateVersion {
		return nil, fmt.Errorf("%w: no version %d", errBadLeftState, leftStateVersion)
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxLeftEntries {
		return nil, fmt.Errorf("%w: entry count", errBadLeftState)
	}
	b = b[k:]
	es := make([]leftEntry, n)
	for i := range es {
		var fields [2]string
		for j := range fields {
			l, k := binary.Uvarint(b)
			if k <= 0 || l > maxLeftString || l > uint64(len(b)-k) {
				return nil, fmt.Errorf("%w: entry %d field %d length", errBadLeftState, i, j)
			}
			fields[j], b = string(b[k:k+int(l)]), b[k+int(l):]
		}
		es[i] = leftEntry{name: fields[0], addr: fields[1]}
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadLeftState, len(b))
	}
	return es, nil
}

// LocalState is this member's push/pull state: the members it holds left.
func (d *delegate) LocalState(join bool) []byte {
	d.mu.Lock()
	es := make([]leftEntry, 0, len(d.left))
	for name, at := range d.left {
		es = append(es, leftEntry{name: name, addr: d.view[name].GossipAddr, at: at})
	}
	d.mu.Unlock()
	return encodeLeftState(es)
}

// MergeRemoteState marks left the members another member holds left and
// this one holds dead at the same address.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return // a member of an older version
	}
	es, err := parseLeftState(buf)
	if err != nil {
		d.repeats.Log(d.log, slog.LevelWarn, "leftstate", err.Error(), "cluster: push/pull state ignored", "err", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range es {
		m, ok := d.view[e.name]
		if !ok || m.State != StateDead || m.GossipAddr != e.addr || e.name == d.cfg.Name {
			continue
		}
		m.State = StateLeft
		d.view[e.name] = m
		d.left[e.name] = time.Now()
		d.log.Info("cluster: member left, as another member saw it", "member", e.name)
		(*Cluster)(d).emitLocked(Event{Kind: EventLeave, Member: m})
	}
}
