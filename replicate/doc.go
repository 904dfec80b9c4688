// Package replicate is the leader's side of replication for one stream:
// which bytes go to which replica and when, how far appends are
// acknowledged, and which replicas need help. It is a deterministic state
// machine in the manner of etcd-io/raft's RawNode: no goroutines, clocks,
// sockets or rdma calls inside. Inputs are method calls; outputs are
// collected in a Ready that one goroutine, the I/O loop, takes and carries
// out with rdma and remote, reporting completions back as inputs.
//
// # Model
//
// The leader's stream is a sequence of regions (local/'s format), each in
// a slot that has the same number on every replica. A region's replicated
// bytes are its header's line 0, [0, 64), and its entries,
// [RegionHeaderSize, tail): the same bytes at the same offsets, so that the
// same recovery code reads the leader's copy and a replica's. Line 1,
// [64, 128), holds the commit and seal words, which are each copy's own:
// an allocation zeroes it on the replica before line 0 is written (as
// local/ does before a region's line 0 makes it valid), and the Replicator
// writes the replica's words itself; the leader's seal word is never
// copied, because it would claim entries a replica catching up lacks.
//
// Positions are Pos{region seq, offset}. The Replicator keeps, per region,
// where each local append ended (bytes and entry index), which is all it
// needs to turn a replica's durable byte position into an entry count; it
// forgets the boundaries behind the slowest replica and the commit point,
// so its memory follows the backlog, not the stream's age. It never holds
// payload: the I/O loop writes from the leader's mapping.
//
// Each replica has a generation (bumped by every failure, restart, epoch
// change), a durable position acked (every byte before it was written and
// flushed to persistence there), a write position next (handed out up to
// there) and the writes in flight between them. Out-of-order completions
// are folded into acked over the contiguous run of completed writes.
//
// Replica states: connecting (a Connect is out) → replicate (keeping up:
// batches of up to MaxBatch bytes, MaxInflight in flight, a backlog under
// MinBatch bytes held back while a write is in flight) or catch-up
// (more than LagEntries entries could not be handed out: chunks of
// CatchUpChunk bytes, CatchUpInflight in flight, until it has been handed
// everything) → retry (after a failure, RetryTicks doubling up to
// MaxRetryTicks) → connecting.
//
// # Inputs
//
//   - NewRegion: the leader started a region (its header is in the mapping).
//   - Append: a local append's bytes are in the leader's mapping.
//   - Persisted: the leader's own stream is durable up to an index.
//   - AddReplica, RemoveReplica, Restarted: membership.
//   - Connected: a replica accepted the epoch; its durable position.
//   - Allocated: a region now exists on a replica.
//   - Flushed: a write and its persistence flush completed on a replica.
//   - Failed: an operation on a replica failed (wrapping ErrFenced when the
//     replica refused the epoch: the Replicator then stops until SetEpoch).
//   - Tick: logical time, for backoffs and lazy commit words.
//   - SetEpoch: the leader was granted a newer epoch.
//
// Completions carry the generation of the Ready item they answer; those
// of an older generation are ignored, so a late completion from a dead
// connection can never advance a replica.
//
// # Outputs (Ready)
//
//   - Connects: connect, Grant the epoch, read the durable position.
//   - Allocs: make a region exist on a replica (remote's Region request)
//     and zero its line 1 durably.
//   - Ops, per replica in posting order: OpWrite (Write + persistence Flush
//     of one range of one region: many appends batched into one write and
//     one flush), OpCommitWord (8-byte AtomicWrite of the commit word at
//     CommitWordOffset, then a Flush of it) and OpSealWord (the same for
//     the seal word of a region the replica holds whole and that is
//     committed). A write never spans regions.
//   - Commit and CommitAdvanced: the commit point, an entry index.
//   - Status, when it changed: per replica state and lagging; the stream
//     under-replicated (some replica not keeping up), quorum lost (too few
//     voters connected for the policy: the commit point cannot move),
//     fenced.
//
// # Acknowledgement
//
// The commit point is computed by package quorum from the leader's
// persisted index and the voters' durable indexes: leader-only, quorum (a
// majority of leader and voters, the leader counted) or all. Every policy
// requires the leader's own persist, because the leader's recovery drops an
// unpersisted suffix and later appends would reuse its offsets. Backup
// targets are written like replicas but do not vote unless
// Config.BackupsVote: they are extra copies, possibly far away, and must
// not set the stream's latency or availability.
//
// Replicas are written as soon as the bytes are in the leader's mapping,
// not after the local persist: the remote write and flush overlap the
// local one, which is the point of one-sided replication (Tailwind, Mu).
// This is safe because nothing is acknowledged before the leader's persist
// too; a replica may then hold bytes the leader lost in a crash, which were
// never acknowledged, and the restarted leader may append other bytes at
// the same positions before the replica reconnects: a reconnecting
// replica's durable position is clamped to what it can hold of this
// leader's (the stream's end when the Leader started, or what the Leader
// made durable there since) and the rest is overwritten.
//
// # Invariants
//
//   - The commit point never moves backwards (membership changes included).
//   - Nothing is acknowledged that the leader has not persisted and the
//     policy's number of voters has not flushed to persistence.
//   - A replica's durable position covers only bytes of writes whose
//     flush completed, in a contiguous run from where it connected.
//   - A commit word written to a replica never names more than that
//     replica holds durably nor more than is committed, and always ends on
//     an append boundary; a region's word is written only once its header
//     is durable there. Within one generation, a replica's words never
//     decrease.
//   - Writes go to a region on a replica only after it was allocated there,
//     in order, from the replica's durable position: a replica's regions
//     hold a prefix of the leader's bytes.
//
// # Commit words
//
// Publishing the commit point is lazy: a replica's word is written after a
// data write to it in the same Ready (the rdma ordering of one Conn puts it
// after the earlier flushes it describes), or alone once it has waited
// CommitWordTicks ticks. When a replica passes into a new region, the
// final word of each region it left is written too. The word is advisory
// (readers of a replica may read up to it; recovery checks entries by
// checksum), so a lost word costs nothing but freshness.
//
// # The I/O loop (leader.go)
//
// Leader is the I/O loop. StartLeader sets itself as the local.Observer
// of the leader's stream: the stream reports, in commit order, each region
// the commit point enters (NewRegion), each run of committed entries
// (Append) and each persist (Persisted), whatever appended them
// (Leader.Append and Start, Stream.Append, Reserve+Publish, a
// local.Appender). It starts from the stream's committed state: every live
// region up to the commit point, as RegionInfo{Tail: used, End}.
//
// One goroutine, the loop, owns the Replicator and, per replica, an rdma
// Conn with a remote.Client and the region descriptors of that connection.
// It feeds inputs (the observer's queue, completions, control answers, a
// ticker, membership calls) and after each batch takes a Ready and carries
// it out:
//
//   - Connect: on a helper goroutine, Dial with the configured rdma
//     Provider, remote.NewClient, LeaderConfig.OnConnect, Grant(epoch,
//     writer), write the leader's superblock (its persistent part, [0,
//     2048) of remote.HeaderSlot) and flush it to persistence, then
//     LeaderConfig.ConnectPos (nil: Pos{}, rewrite from the oldest region;
//     a position past the stream's end when the Leader started, or past
//     the replica's durable position under this Leader if that is
//     further, is clamped to it), the cut-back (line 0 of every slot
//     holding no live region of the leader zeroed, and the region of that
//     position from there on and the leader's last region from its end
//     on, durably: the replica then holds nothing the leader does not) and
//     the descriptors of the regions taken as present; the answer comes
//     back as Connected or Failed.
//   - Alloc: on a helper goroutine, Client.Region(epoch, slot), then an
//     rdma Write of line 1 from a registered zero buffer and a
//     persistence Flush; back as Allocated.
//   - OpWrite: Write from the leader's slot (registered on first use; the
//     mapping never moves) into the replica's slot at the same offset,
//     then Flush(Persistence) of the range. OpCommitWord and OpSealWord:
//     AtomicWrite and Flush, likewise. A Ready's ops to one replica are
//     posted as one batch (rdma.Corker: one write on tcp) and only its
//     last Flush is notified to the CQ, on which the loop waits itself;
//     that completion covers the batch, whose writes come back as
//     Flushed(End).
//   - Any error: Failed (remote.ErrStaleEpoch and ErrNotWriter wrapped in
//     ErrFenced), the connection is closed; the Replicator reconnects
//     after its backoff.
//   - CommitAdvanced: appenders waiting below Commit return. Status:
//     kept for Leader.Status; Fenced fails every waiter and later append
//     with ErrFenced.
//
// A goroutine per connection watches its rdma events: a lost connection
// is a Failed at once, so that an idle stream's Status notices too.
//
// The local persist overlaps the remote writes: Leader.Append calls
// Stream.Sync on its own goroutine (appenders share persists: group
// commit), and a persister goroutine does the same for entries appended
// otherwise (Leader.Start, the stream's own calls). Appends wait for the
// commit point: while quorum is lost they keep waiting (until their
// context ends); the local stream goes on accepting them meanwhile.
//
// Trim (trim.go): Leader.Trim trims the leader's stream and, in the same
// loop step, brings each connected copy to the new head on its Conn (the
// superblock with its trim record first, then line 0 of each freed
// region zeroed, oldest first, then remote's Discard gives the slots'
// storage back); the other replicas go through the connect path, which
// does the same. Replicator.Trim drops the regions from the log.
//
// Not done: SetEpoch on a running Leader.
package replicate
