// Package node serves the client service of api/ (gRPC) over the streams
// of one data directory, as one member of a cluster (Config.Cluster, a
// memberlist membership from cluster/) or alone.
//
// # Streams in a cluster
//
// The node a stream is created on leads it. With more than one replica,
// CreateStream places the other replicas on live stream nodes
// (cluster.Place: weighted rendezvous hashing) and an extra copy on a
// live backup target if there is one (cluster.PlaceBackup); it fails with
// FailedPrecondition when too few stream nodes are alive. A name that
// this node holds a copy of, or that another live member leads (asked
// with the local-only flag), is refused with AlreadyExists; a member that
// cannot be reached is not asked, and two creates of one name at the same
// moment on two nodes are not excluded. Each time the
// leader opens such a stream it takes the next epoch, durably in meta.json,
// and starts a replicate.Leader: every committed entry is written into each
// copy over rdma (Config.Provider) and an append is answered once the
// acknowledgement policy's copies hold it durably. Reads and tails see an
// entry from then on, never before. A member holding copies that rejoins is
// reconnected at once (MemberChanged).
//
// Every node serves the copies it holds on Config.PeerAddr (remote.Hub): a
// leader's first connection for a stream creates its copy; a grant is
// authorised only for the leader the copy was made for, at an epoch no
// older than the highest granted before, which is recorded durably first,
// so a leader's older incarnation is refused by every copy. DeleteStream
// deletes the copies too, naming each (leader and stream id) so that a
// holder never deletes the copy of a stream made anew under the name; a
// live holder that does not answer (hung) is asked again in the
// background until it does. A copy left behind by a stream deleted while
// its holder was down (its leader could not delete it) is set aside (DATA/orphans) once its leader, seen
// joining (or seen by this node as it joins), answers that it has no such
// stream; and when a leader creates a stream of that name anew with this
// node among its copies, if the copy's leader, live, answers so too or is
// that leader itself with a stream of another id (orphan.go). While the
// old leader is down the copy is kept (reads are served from it) and a
// new leader of the name is refused by this node. A leader that lost its
// data directory answers that it has none of its streams: their copies
// are set aside too, not deleted, for an operator to recover or remove.
//
// A call about a stream this node does not lead is answered with
// FailedPrecondition carrying api.NotLeader (the leader's name, client
// address and epoch), found by asking the other members (with the
// local-only metadata flag, so that lookups never loop); the client
// package follows it. ListStreams lists the streams every member leads.
// StreamStatus is always answered by the leader (a hint elsewhere).
//
// Read and Tail are answered by any node holding a copy of the stream
// (copyread.go, local.OpenCopy), from that copy, up to the commit point
// the copy knows (its commit and seal words; ReadResponse.Committed is
// that point): a tail of a copy follows it as the leader writes it,
// polling its words. The leader writes a copy's commit word lazily, so a
// copy may lag the leader's commit point for a moment: a client that must
// read its own appends reads from the leader. A node holding no copy
// answers with the leader hint. Automatic failover of a dead leader is not
// built yet: its streams are unavailable (for appends; copies still serve
// what they hold) until it comes back.
//
// # Data directory
//
//	DIR/streams/NAME/meta.json     what CreateStream was given (JSON below)
//	DIR/streams/NAME/data.stream   the local/ stream file
//	DIR/streams/.NAME.*            a stream being created or deleted
//	DIR/replicas/NAME/meta.json    a copy held for another leader: {"leader","region_size","epoch"}
//	DIR/replicas/NAME/data.stream  that copy, in local/'s format, written over rdma
//	DIR/orphans/NAME.TIME/         a copy set aside: its leader said the stream was gone
//
// A stream is created in a hidden directory which is renamed to NAME once
// both files are durable, and deleted by renaming it back to a hidden name
// before removing it, so a crash never leaves a half-made NAME; New
// removes hidden leftovers. meta.json is replaced atomically (write,
// fsync, rename, fsync of the directory) when a replicated stream's epoch
// is bumped:
//
//	{"replicas":3,"acks":"quorum","region_size":4194304,"epoch":2,"created":"RFC 3339",
//	 "followers":["n1","n3"],"backup":"b1","peers":{"n1":"10.0.0.1:7421",...}}
//
// # Streams in memory
//
// A stream is opened for writing (local.Open, with recovery) by the first
// call that needs it and stays open until DeleteStream or Shutdown. Each
// call holds a reference on it; DeleteStream and Shutdown cancel the
// stream's context (ending its tails), wait for the references to go and
// then close it.
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
// envelope (envelope.go: a kind byte, and for a producer's entry the
// 64-bit FNV-1a hash of its id and the sequence number, 17 bytes in all)
// written, persisted and replicated with it, and a stream being opened
// reads the envelopes of its last IdempotenceHorizon entries (100,000 by
// default) to remember what was stored, as Kafka keeps producer ids and
// sequence numbers in its record batches and NATS JetStream rebuilds its
// duplicate window from message headers. An entry the crashed leader
// stored but never persisted is gone, and its retry is stored anew; one it
// persisted is remembered. Reads strip the envelope. Streams made before
// envelopes (no "envelope" in meta.json) hold bare data and keep the
// window in memory only.
//
// # Batches
//
// An AppendRequest may carry a batch (AppendRequest.batch: at most
// MaxBatch entries and MaxBatchBytes of payload, never with data; else
// InvalidArgument), in Append and AppendStream alike. Its entries take
// the producer's sequence numbers sequence, sequence+1, ..., each
// idempotent as above, and are stored in order under one acquisition of
// the producer's lock (so at consecutive positions unless another
// producer appends at the same time); the request is answered once, when
// its highest position is acknowledged, with every entry's position and
// duplicate flag. A batch that fails part way may have stored a prefix of
// its entries: a retry with the same numbers finds them as duplicates.
// AppendStream's answerer takes every answer queued when it wakes, waits
// once for the highest position among them and sends them all, in order.
//
// # Goroutines
//
// gRPC owns one goroutine per call; the package adds two per AppendStream
// call (one reading and storing requests, one answering them), ended when
// the call ends, and one per background job (an orphan sweep, a copy
// delete retried), counted as calls. Shutdown stops them all: it refuses
// new calls (Unavailable), ends tails and background jobs, waits for the
// calls in flight (appends drain: they finish and are answered; an
// AppendStream call whose entries still wait for their copies ends
// Unavailable, and a retry by sequence number finds them), then stops the
// gRPC server and closes the streams. An append cut by Shutdown or
// DeleteStream is Unavailable or NotFound, never Canceled.
package node
