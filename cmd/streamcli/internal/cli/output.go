package cli

import (
	"encoding/json"
	"flag"

	"github.com/rpstream/rpstream/api"
)

// Every command that prints something takes --output text|json. JSON
// output is one object per line (append and tail: one per entry), with
// the field names below: scripts read them, so a name never changes once
// released; fields are only added.

// outputFlag defines --output on fs.
func outputFlag(fs *flag.FlagSet) *string {
	return fs.String("output", "text", "output `FORMAT`: text or json")
}

// wantJSON checks an --output value: true for json.
func wantJSON(output string) (bool, error) {
	switch output {
	case "text":
		return false, nil
	case "json":
		return true, nil
	}
	return false, usagef("--output must be text or json, not %q", output)
}

// printJSON writes v as one line of JSON.
func (c *invocation) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.out.Write(append(b, '\n'))
	return nil
}

// createdJSON is create --output json.
type createdJSON struct {
	Stream     string `json:"stream"`
	Path       string `json:"path,omitempty"` // embedded mode
	Node       string `json:"node,omitempty"` // node mode
	Leader     string `json:"leader,omitempty"`
	Replicas   uint32 `json:"replicas,omitempty"`
	Acks       string `json:"acks,omitempty"`
	RegionSize int    `json:"region_size"`
}

// deletedJSON is delete --output json.
type deletedJSON struct {
	Stream  string `json:"stream"`
	Deleted bool   `json:"deleted"`
	Path    string `json:"path,omitempty"`
	Node    string `json:"node,omitempty"`
}

// streamJSON is a stream in ls and status --output json. Embedded mode
// fills on_disk, file_size, persist and the regions' slots; node mode
// the leader, replicas and copies.
type streamJSON struct {
	Stream          string       `json:"stream"`
	Error           string       `json:"error,omitempty"` // ls: this stream could not be read
	Head            uint64       `json:"head"`
	Next            uint64       `json:"next"`
	Entries         uint64       `json:"entries"`
	RegionSize      int          `json:"region_size"`
	RegionCount     int          `json:"region_count"`
	OnDisk          int64        `json:"on_disk,omitempty"`
	FileSize        int64        `json:"file_size,omitempty"`
	Persist         string       `json:"persist,omitempty"`
	PersistDetail   string       `json:"persist_detail,omitempty"`
	Leader          string       `json:"leader,omitempty"`
	LeaderAddr      string       `json:"leader_addr,omitempty"`
	Epoch           uint64       `json:"epoch,omitempty"`
	Replicas        uint32       `json:"replicas,omitempty"`
	Acks            string       `json:"acks,omitempty"`
	Persisted       uint64       `json:"persisted,omitempty"`
	UnderReplicated bool         `json:"under_replicated"`
	Copies          []copyJSON   `json:"copies,omitempty"`
	Regions         []regionJSON `json:"regions,omitempty"`
	// With --node: the retention policy, the position the stream was
	// trimmed to, and its named consumers.
	Retention *retentionJSON `json:"retention,omitempty"`
	TrimHead  uint64         `json:"trim_head,omitempty"`
	Consumers []consumerJSON `json:"consumers,omitempty"`
}

type copyJSON struct {
	Member    string `json:"member"`
	Backup    bool   `json:"backup"`
	Persisted uint64 `json:"persisted"`
	Lag       uint64 `json:"lag"`
}

type regionJSON struct {
	Seq    uint64 `json:"seq"`
	Slot   *int   `json:"slot,omitempty"` // embedded mode
	First  uint64 `json:"first"`
	Count  uint64 `json:"count"`
	Used   uint64 `json:"used"`
	Sealed bool   `json:"sealed"`
}

// remoteStreamJSON is the JSON of a node's status of a stream; regions
// only when withRegions.
func remoteStreamJSON(st *api.StreamStatusResponse, withRegions bool) streamJSON {
	j := streamJSON{Stream: st.Stream, Head: st.Head, Next: st.Committed, Entries: st.Committed - st.Head, RegionSize: int(st.RegionSize),
		RegionCount: len(st.Regions), Leader: st.Leader, LeaderAddr: st.LeaderAddr, Epoch: st.Epoch, Replicas: st.Replicas,
		Acks: acksName(st.Acks), Persisted: st.Persisted, UnderReplicated: st.UnderReplicated,
		Retention: toRetentionJSON(st.Retention), TrimHead: st.TrimHead, Consumers: consumersJSON(st.Consumers)}
	for _, r := range st.ReplicaStatus {
		j.Copies = append(j.Copies, copyJSON{Member: r.Member, Backup: r.Backup, Persisted: r.Persisted, Lag: r.Lag})
	}
	if withRegions {
		for _, r := range st.Regions {
			j.Regions = append(j.Regions, regionJSON{Seq: r.Seq, First: r.First, Count: r.Count, Used: r.Used, Sealed: r.Sealed})
		}
	}
	return j
}

// memberJSON is a member in members --output json.
type memberJSON struct {
	Name       string `json:"name"`
	Self       bool   `json:"self"`
	Role       string `json:"role"`
	State      string `json:"state"`
	ClientAddr string `json:"client_addr"`
	PeerAddr   string `json:"peer_addr"`
	GossipAddr string `json:"gossip_addr"`
	FreeBytes  uint64 `json:"free_bytes"`
}
