package replicate

import (
	"fmt"

	"github.com/rpstream/rpstream/replicate/quorum"
)

// Config configures a Replicator. The zero value of every field but Policy
// means its default (DefaultConfig).
type Config struct {
	// Policy is the acknowledgement policy. Every policy requires the
	// leader's own persist (package quorum).
	Policy quorum.Policy
	// BackupsVote counts backup targets as voters. By default they are
	// extra copies only: they are written like any replica but neither
	// help nor hold back the commit point, because a backup target sits
	// far away (another rack) and a stream must not be as slow or as
	// fragile as its backup.
	BackupsVote bool
	// MaxInflight bounds the writes (each a Write and a persistence
	// Flush) in flight to one replica that is keeping up.
	MaxInflight int
	// MaxBatch bounds the bytes of one write to a replica that is keeping
	// up: appends accumulated since its last write go out together.
	MaxBatch int
	// MinBatch: a replica that is keeping up is handed a write of fewer
	// than MinBatch bytes (the whole backlog, in the tail region) only
	// when nothing is in flight to it. Small appends that arrive while a
	// write is out accumulate and go out together once it completes: one
	// write, one acknowledgement and one completion per round trip
	// instead of per append, as Kafka's followers keep one fetch in
	// flight. A lone append never waits (nothing is in flight); larger
	// backlogs are pipelined up to MaxInflight. Zero: no such wait.
	MinBatch int
	// CatchUpChunk bounds the bytes of one write to a replica catching
	// up, and CatchUpInflight how many of them are in flight, so that a
	// catch-up never holds the I/O loop or the link for long.
	CatchUpChunk    int
	CatchUpInflight int
	// LagEntries: a replica more entries than this behind the appended
	// end is lagging: it is caught up in chunks and reported.
	LagEntries uint64
	// CommitWordTicks: a replica's commit word not piggybacked on a data
	// write for this many ticks is published alone.
	CommitWordTicks int
	// RetryTicks is the wait before reconnecting a failed replica; it
	// doubles with each failure in a row up to MaxRetryTicks.
	RetryTicks    int
	MaxRetryTicks int
	// Floor is where the commit point starts: every entry before it was
	// committed by an earlier leader of the stream (the catalog's commit
	// floor). A leader never takes its own persisted end as committed:
	// entries past Floor are acknowledged only once the policy's copies
	// confirm them under this leader.
	Floor uint64
	// EpochStart is the index of the first entry this leader appends
	// under its epoch (the node's epoch marker). The commit point moves
	// past Floor only to a point beyond it: the entries an earlier
	// leader left uncommitted are committed together with one of this
	// epoch, never by being counted on a quorum alone (Raft's rule for
	// entries of earlier terms, its "figure 8").
	EpochStart uint64
}

// DefaultConfig is quorum acknowledgement with moderate batching.
func DefaultConfig() Config {
	return Config{
		Policy:          quorum.Majority,
		MaxInflight:     4,
		MaxBatch:        1 << 20,
		CatchUpChunk:    256 << 10,
		CatchUpInflight: 1,
		LagEntries:      4096,
		CommitWordTicks: 2,
		RetryTicks:      1,
		MaxRetryTicks:   32,
	}
}

// Validate checks c after defaults are filled in.
func (c *Config) Validate() error {
	switch c.Policy {
	case quorum.Majority, quorum.LeaderOnly, quorum.All:
	default:
		return fmt.Errorf("%w: policy %v", ErrConfig, c.Policy)
	}
	if c.MaxInflight < 1 || c.MaxBatch < 8 || c.MinBatch < 0 || c.CatchUpChunk < 8 || c.CatchUpInflight < 1 ||
		c.CommitWordTicks < 1 || c.RetryTicks < 1 || c.MaxRetryTicks < c.RetryTicks {
		return fmt.Errorf("%w: %+v", ErrConfig, *c)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields set from
// DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	set(&c.MaxInflight, d.MaxInflight)
	set(&c.MaxBatch, d.MaxBatch)
	set(&c.CatchUpChunk, d.CatchUpChunk)
	set(&c.CatchUpInflight, d.CatchUpInflight)
	set(&c.CommitWordTicks, d.CommitWordTicks)
	set(&c.RetryTicks, d.RetryTicks)
	set(&c.MaxRetryTicks, d.MaxRetryTicks)
	if c.LagEntries == 0 {
		c.LagEntries = d.LagEntries
	}
	return c
}
