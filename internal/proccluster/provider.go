package proccluster

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// ErrNoProvider is returned by RDMAProvider when a member's log holds no
// "rdma provider" record (it has not got that far, or logs another way).
var ErrNoProvider = errors.New("proccluster: no rdma provider in the log")

// RDMAProvider is the rdma provider member i said it uses, and why
// (streamnode logs one "rdma provider" record at start, such as provider
// "verbs", why "--rdma verbs"): what a run really used, whatever flags
// it was given. The log keeps every start of the member; the last record
// counts.
func (c *Cluster) RDMAProvider(i int) (provider, why string, err error) {
	if i < 0 || i >= len(c.members) {
		return "", "", fmt.Errorf("%w: %d of %d", ErrIndex, i, len(c.members))
	}
	name := c.members[i].Log
	f, err := os.Open(name)
	if err != nil {
		return "", "", fmt.Errorf("proccluster: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		var rec struct {
			Msg      string `json:"msg"`
			Provider string `json:"provider"`
			Why      string `json:"why"`
		}
		// Lines that are not JSON (a panic's trace, a wrapper's output)
		// are not records: skipped.
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Msg != "rdma provider" {
			continue
		}
		provider, why, found = rec.Provider, rec.Why, true
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("proccluster: reading %s: %w", name, err)
	}
	if !found {
		return "", "", fmt.Errorf("%w of %s (%s)", ErrNoProvider, c.members[i].Name, name)
	}
	return provider, why, nil
}
