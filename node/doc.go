// Package node serves the client service of api/ (gRPC) over the local
// streams kept in one data directory. It is the single-node slice of a
// stream node: every stream is led by this node at epoch 1, and the
// replication factor and acknowledgement policy given at creation are
// stored and reported but not yet acted on (StreamStatus says such a
// stream is under-replicated); replicate/ and cluster/ come later.
//
// # Data directory
//
//	DIR/streams/NAME/meta.json     what CreateStream was given (JSON below)
//	DIR/streams/NAME/data.stream   the local/ stream file
//	DIR/streams/.NAME.*            a stream being created or deleted
//
// A stream is created in a hidden directory which is renamed to NAME once
// both files are durable, and deleted by renaming it back to a hidden name
// before removing it, so a crash never leaves a half-made NAME; New
// removes hidden leftovers. meta.json never changes after creation:
//
//	{"replicas":1,"acks":"quorum","region_size":4194304,"epoch":1,"created":"RFC 3339"}
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
// Per stream and producer id the node keeps, in memory only, the positions
// of the IdempotenceWindow highest sequence numbers it stored, and a floor
// above which every stored number is among them. A request repeating a
// remembered number gets the original position (once durable) instead of
// a second copy; a number at or below the floor is refused with
// FailedPrecondition (it may have been stored); any other is stored, so
// appends in flight at once may arrive in any order. This state is lost
// when the node restarts or the stream is reopened: a retry that crosses a
// restart may be stored twice. Keeping it durable (in the entries, as
// Kafka does in its record batches) is left for the replicated version.
//
// # Goroutines
//
// gRPC owns one goroutine per call; the package adds one per AppendStream
// call (answering appends while the call's goroutine keeps reading
// requests), ended when the call ends. Shutdown stops them all: it refuses
// new calls (Unavailable), ends tails, waits for the calls in flight
// (appends drain: they finish and are answered), then stops the gRPC
// server and closes the streams.
package node
