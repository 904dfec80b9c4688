// Package node serves the client service of api/ (gRPC) over the streams
// of one data directory, as one member of a cluster (Config.Cluster, a
// memberlist membership from cluster/) or alone.
//
// # Streams in a cluster
//
// In a cluster every node is a member of the catalog's Raft group
// (Config.Catalog, package catalog/controller), and the catalog decides:
// which streams exist, their copies, their leader and its epoch. A create
// on any node goes to the controller (the group's leader), which places
// the copies (the asking node leads if it is a live stream node; the
// other replicas on live stream nodes by weighted rendezvous hashing, an
// extra copy on a live backup target) and commits it: of concurrent
// creates of one name exactly one wins, the others get AlreadyExists. The
// create is answered once the asked node's catalog shows it; the leader
// makes the stream's files, opens it under the epoch the create granted
// and marks it active, off that path. Each later time the leader opens
// the stream it takes the next epoch from the catalog (unless it reopens
// it for idleness, or retries a takeover, under the one this process
// holds: idle.go, catalog.go openLed), and a
// copy's holder lets a writer in only under the epoch and leader the
// catalog names (it catches its view up first if the writer is ahead), so
// an old incarnation of a leader, a replaced node or a restarted one is
// refused. A delete leaves a tombstone; every holder removes its files
// when its catalog shows it, now or when it comes back, and records so.
// Files of a name the catalog never held are left alone (reconcile in
// catalog.go).
//
// Every node answers from its catalog: ListStreams lists the catalog's
// streams; a call about a stream another node leads gets
// FailedPrecondition with api.NotLeader (leader, address, epoch), or
// Unavailable naming the last known leader when that leader is down;
// NotFound only when a current view of the catalog (a Raft read barrier)
// has no such stream. Read and Tail are answered by any node holding a
// copy (copyread.go, local.OpenCopy), from that copy, up to the commit
// point the copy knows, without asking the leader. When a leader's lease
// at the controller expires the catalog elects another leader among the
// copies, which takes the stream over (takeover.go: fence, survey, choose
// the log holding every acknowledged entry or hand the stream to its
// holder, open a new epoch with a marker entry); a node that finds
// another leader named for a stream it led turns its files into a copy.
// When no copy on a stream node survives, an operator restores the
// stream from any copy (a backup's too; restore.go, restorecmd.go): the
// catalog names a new leader under a new epoch, which fetches that copy
// over gRPC, checks its SHA-256 and every entry's checksum, and takes it
// over as a promoted copy.
// Streams acknowledged by the leader alone are not moved. A node without
// a catalog runs alone: its streams are its own, without copies.
//
// # Data directory
//
//	DIR/streams/NAME/meta.json     what CreateStream was given (JSON below)
//	DIR/streams/NAME/data.stream   the local/ stream file
//	DIR/streams/.NAME.*            a stream being created or deleted
//	DIR/replicas/NAME/meta.json    a copy held for another leader: {"leader","region_size","epoch","stream_id"}
//	DIR/replicas/NAME/data.stream  that copy, in local/'s format, written over rdma
//	DIR/catalog/                   the catalog's Raft log and snapshots (catalog/raftlog)
//	DIR/incarnation                this directory's identity in the catalog (hex)
//
// A stream is created in a hidden directory which is renamed to NAME once
// both files are durable, and deleted by renaming it back to a hidden name
// before removing it, so a crash never leaves a half-made NAME; New
// removes hidden leftovers. meta.json holds what the stream was made
// with; its copies, leader and epoch are the catalog's (a file written
// before the catalog may still carry "epoch", "followers", "backup" and
// "peers", which are not used for writing):
//
//	{"replicas":3,"acks":"quorum","region_size":4194304,"created":"RFC 3339",
//	 "envelope":true,"stream_id":8}
//
// # Streams in memory
//
// A stream is opened for writing (local.Open, with recovery) by the first
// call that needs it and stays open until DeleteStream or Shutdown, or
// until it has been unused for Config.IdleClose, or is the least recently
// used idle stream when Config.MaxOpenStreams is reached; it then opens
// again on its next call, under the same epoch (idle.go). Each call holds
// a reference on it; DeleteStream and Shutdown cancel the stream's context
// (ending its tails), wait for the references to go and then close it.
//
// # Idempotent appends
//
// Per stream and producer id the node keeps the positions of the
// IdempotenceWindow highest sequence numbers it stored, and a floor above
// which every stored number is among them. A request repeating a
// remembered number gets the original position (once durable) instead of
// a second copy; a number at or below the floor is refused with
// FailedPrecondition (it may have been stored); any other is stored, so
// appends in flight at once may arrive in any order.
//
// The state survives restarts, crashes included: each entry carries an
// envelope (envelope.go: a kind byte, the leader's append time, and for
// a producer's entry the 64-bit FNV-1a hash of its id and the sequence
// number, 25 bytes in all; 17 without the time in entries stored before
// times) written, persisted and replicated with it, and a stream being opened
// reads the envelopes of its last IdempotenceHorizon entries (100,000 by
// default) to remember what was stored, as Kafka keeps producer ids and
// sequence numbers in its record batches and NATS JetStream rebuilds its
// duplicate window from message headers. An entry the crashed leader
// stored but never persisted is gone, and its retry is stored anew; one it
// persisted is remembered. Reads strip the envelope. Streams made before
// envelopes (no "envelope" in meta.json) hold bare data and keep the
// window in memory only.
//
// # Retention and consumers
//
// The leader of a stream trims it by its retention policy and applies the
// catalog's trim head, every RetentionEvery: the head goes into the
// catalog first, then into the leader's stream and every copy
// (retention.go). Named consumers are cursors in the catalog; a node
// gathers their acknowledgements and commits them in one catalog command
// per stream every AckEvery (at-least-once delivery, as Kafka's committed
// offsets).
//
// # Batches
//
// An AppendRequest may carry a batch (AppendRequest.batch: at most
// MaxBatch entries and MaxBatchBytes of payload, never with data; else
// InvalidArgument), in Append and AppendStream alike. Its entries take
// the producer's sequence numbers sequence, sequence+1, ..., each
// idempotent as above; those not stored yet are stored atomically at
// consecutive positions (append.go): as batch slots and one record
// holding them all (envelope.go), which local writes, recovers and
// replicates whole or not at all, and which readers show only once they
// have read it (batchread.go). A batch must fit in one record, a little
// under a region (else ResourceExhausted). The request is answered once,
// when its highest position is acknowledged, with every entry's position
// and duplicate flag. AppendStream's answerer takes every answer queued
// when it wakes, waits once for the highest position among them and
// sends them all, in order. Streams made before envelopes store a batch
// entry by entry (a failure may leave a prefix).
//
// # Conditional appends and times
//
// AppendRequest.expected_next makes an append conditional: the node
// takes a stream's positions, checks the expected one and stamps the time
// under one lock per stream (stream.appendMu), so of competing appends
// expecting the same position exactly one is stored; the others get
// FailedPrecondition with api.AppendConditionFailed (the actual next
// position). Duplicates are answered before the check. Every position
// counts, those readers skip (epoch markers, slots of a batch that
// failed) included: the next position is the stream's, as Read's next
// reports it, so the check is exact across a failover (the new leader's
// marker takes a position, which a client learns from the refusal).
//
// Each entry carries the time the leader stamped (Config.Clock), Unix
// nanoseconds, increasing with positions: the clock's time, or 1 ns
// after the last if the clock is not ahead of it; a stream being opened
// takes the last time from its log (latestTime). FindPosition (since.go)
// finds the first entry at or after a time by binary search over the
// regions, then a walk of one region.
//
// # Metrics and health
//
// With Config.Metrics the server registers Prometheus metrics (metrics.go):
// counters and a latency histogram on the append path, the rest read from
// the server's state when the registry is gathered. Ready says whether the
// node can serve clients; the client port serves grpc.health.v1 by it and
// gRPC server reflection.
//
// # Goroutines
//
// gRPC owns one goroutine per call; the package adds two per AppendStream
// call (one reading and storing requests, one answering them), ended when
// the call ends, with a catalog, the reconcile loop (catalog.go), and the
// health loop (metrics.go: grpc.health.v1 follows Ready), counted as
// calls. Shutdown stops them all: it refuses
// new calls (Unavailable), ends tails and background jobs, waits for the
// calls in flight (appends drain: they finish and are answered; an
// AppendStream call whose entries still wait for their copies ends
// Unavailable, and a retry by sequence number finds them), then stops the
// gRPC server and closes the streams (several at a time). An append cut by Shutdown or
// DeleteStream is Unavailable or NotFound, never Canceled.
package node
