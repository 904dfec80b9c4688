// Package tcp is the pure-Go rdma provider: a faithful software emulation
// of one-sided RDMA over TCP. It is the default wherever no RDMA device
// exists.
//
// A Peer keeps one TCP connection (one handshake) per address it dials and
// carries every rdma.Conn to that address on it, each on a channel of its
// own, as an RDMA NIC carries many queue pairs over one port: a node that
// replicates ten thousand streams to another holds one socket and one
// reader and one writer goroutine for them, not ten thousand. A channel
// is what a Conn was before: its own request numbering, acknowledgements,
// in-flight limit, receive queue, access switch and failure. A rejected
// request ends its channel only (as a remote access error moves one
// queue pair to the error state); a broken socket or a frame that breaks
// the framing ends every channel of the connection. The connection closes
// when its last channel has closed.
//
// Emulation, not approximation: the target side of every Conn checks each
// request's key, usage bits and bounds against its Peer's registrations and,
// on any violation, sends an error frame and closes the channel (the
// initiator's Conn is poisoned, as a reliable-connected queue pair goes to
// the error state). Payload bytes of a Write go from the socket straight
// into the registered memory (io.ReadFull into the registered slice, after
// the bounds check; only what the 64 KiB read buffer already holds is
// copied from it; with TLS, each sealed record is decrypted straight into
// the slice when it fits whole). A persistence Flush is acknowledged only after the
// target called the registration's Persister on the range. Requests are
// executed in arrival order by one goroutine, which gives the ordering
// rdma promises: a Flush or AtomicWrite follows every earlier Write.
//
// # Frames (protocol version 2)
//
// After the handshake (package rdma/internal/hs) both directions carry
// frames. Every frame starts with a 32-byte header, integers little-endian:
//
//	off size field
//	0   1    type
//	1   1    arg: FlushType for flush, error code for error, else 0
//	2   2    channel: 1 to 65535 (version 1 had this reserved, zero)
//	4   4    n: length of the operation (write, read, flush, send, read
//	         response); 8 for atomic write; 0 for ack and error
//	8   8    id: the request's sequence number (each side numbers its own
//	         requests 1, 2, 3, ... with no gap); for ack, the highest id
//	         done; for read response and error, the request's id
//	16  8    key of the target registration (requests), else 0
//	24  8    offset in the target registration (requests), else 0
//
// and is followed by a payload of n bytes for write, send and read
// response, and of 8 bytes for atomic write; other frames have none.
//
//	type  name           direction            meaning
//	1     write          initiator -> target  store payload at key+offset
//	2     read           initiator -> target  send n bytes at key+offset back
//	3     flush          initiator -> target  make [offset, offset+n) visible (arg 1) or persistent (arg 2)
//	4     atomic write   initiator -> target  one 8-byte store at key+offset (offset 8-aligned)
//	5     send           initiator -> target  a message for the next posted Recv
//	6     open           dialler -> acceptor  open the channel (a Conn for the acceptor's Listener)
//	16    ack            target -> initiator  every request with id <= this id is done
//	17    read response  target -> initiator  the data of read id (and ack of every earlier id)
//	18    error          target -> initiator  request id was rejected (arg: code); the target closes the channel next
//	19    close          either way           this side closed the channel and sends nothing more on it
//
// Channels: only the dialling side opens them, with the lowest number
// after the last it opened that is not in use. Each side sends a
// channel's close exactly once, on a local Close or failure or in answer
// to the peer's; a number is free again once a side has both sent and
// received its close, so frames of an old channel can never be taken
// for a new one's. Frames that arrive for a channel this side has closed
// are dropped (their payload skipped); a frame for a channel that is not
// open, or after the peer's close, is a violation that ends the
// connection. A channel rejected before its frame's payload was read has
// the payload skipped, unless it is longer than MaxTransfer, which ends
// the connection.
//
// A receiver validates every field before it acts: unknown types, non-zero
// reserved bytes, ids out of sequence, lengths beyond the registration,
// MaxTransfer or MaxMessage, acks for requests never sent, and read responses
// of the wrong length are protocol violations that end the connection. No
// length from the peer sizes an allocation except a send payload, which is
// bounded by MaxMessage and RecvQueue.
//
// This format must never change; a new one gets a new rdma.ProtocolVersion.
//
// # TLS
//
// With rdma.Config.TLS a connection starts with a mutual TLS 1.3
// handshake, the hello runs inside the TLS session, and then the frames
// above, unchanged, travel in records sealed with AES-128-GCM under keys
// exported from the session, one per direction (seal.go has the record
// format). Leaving crypto/tls after the hello is what lets a sealed batch
// still go out with one non-blocking write on the producing goroutine (the
// latency path below); a record that fails authentication ends the
// connection like any other protocol violation.
//
// # Goroutines
//
// Each Listener owns an accept loop and one goroutine per handshake in
// progress (at most 64); Close cancels them and waits.
//
// Each connection (link.go) owns two, started after its handshake and
// stopped by the first failure of the connection or when its last
// channel closes (fail closes the socket; Peer.Close waits for both):
//   - the reader executes the peer's requests of every channel, in
//     arrival order, and completes this side's Ops from the peer's
//     responses;
//   - the writer coalesces every queued frame of every channel (requests
//     posted by callers, acks and read responses from the reader) into one
//     vectored write (net.Buffers, writev), so many small operations share
//     a syscall. A Conn's Close waits for a request of the peer being
//     executed on its channel, for a receive or read response being read
//     into the channel's memory, and for the writer to be done with its
//     posts' payloads (at most about AckTimeout, the writer's own
//     deadline); no goroutine is its own.
//
// Acks are cumulative and coalesced: the reader acknowledges only when it
// has no further complete request header buffered, so a burst of writes and
// the flush behind it cost one ack per channel.
//
// Latency path: when no one is sending, the op that ends a run of writes
// (flush, atomic write, read, send) on an idle connection, and the ack of
// such an op, are written by the goroutine that produced them with one
// non-blocking writev instead of being handed to the writer goroutine;
// what the socket does not take goes back to the head of the queue.
// Between Cork and Uncork (rdma.Corker) posts only queue; the last Uncork
// sends them the same way, so that a batch of operations costs one
// writev and, on the peer, one read and one ack. A cork holds back the
// other channels of the connection too, for as short as a batch takes to
// post.
//
// Timeouts (all AckTimeout): the writer's watchdog ends a channel whose
// peer sent nothing on it while its Ops were pending (the channel alone:
// a peer slow to serve one stream does not take the others down); every
// vectored write must make progress (a peer that stops reading ends the
// connection); a request payload the reader must
// wait for must arrive (a peer trickling bytes would otherwise hold a
// registration, and Deregister, forever). After a failure the writer has
// one second to send the error frame.
package tcp
