// Package rdma is one-sided remote memory access with librpma's semantics,
// shaped for Go: a Peer registers memory and connects; a Conn writes into,
// reads from, flushes and atomically writes the registered memory of the
// other side, and exchanges small messages.
//
// Providers implement the interfaces of this package: rdma/tcp (pure Go,
// the default, a faithful software emulation) and rdma/verbs (cgo over
// libibverbs and librdmacm, build tag "verbs"). The conformance suite in
// rdma/rdmatest runs against each of them.
//
// # Connections
//
// Peer.Dial and Listener.Accept run a handshake before a Conn exists: each
// side sends a Hello (protocol version, capabilities, whether its memory is
// written directly to persistent memory, its in-flight and message limits)
// with a fresh nonce, and each proves knowledge of the shared secret with an
// HMAC-SHA256 over both Hellos (challenge and response both ways). There is
// no anonymous peer: a Config without a secret does not validate. A version
// mismatch gives ErrVersion, a wrong secret ErrAuth.
//
// # Operations and completions
//
// Write, Read, AtomicWrite, Flush, Send and Recv post an operation and
// return its *Op at once; many may be in flight on one Conn (up to
// Config.MaxInflight; posting blocks while that many are pending, and
// returns a failed Op if the Conn dies meanwhile). An Op is a handle
// (Done, Wait, Err) and may also be delivered to a CQ (Op.Notify).
//
// Ordering, per Conn:
//   - operations reach the target in the order they were posted (posts from
//     several goroutines are ordered as their calls are serialised);
//   - messages fill the posted Recvs in the order the Recvs were posted;
//   - a Flush or an AtomicWrite is executed by the target only after every
//     Write posted before it on the same Conn, so its completion covers them
//     (a persistence Flush makes them durable if they fall in its range);
//   - a Read sees every Write posted before it on the same Conn;
//   - completions of one Conn are reported in posting order for the tcp
//     provider; callers must not rely on more than "the completion of a
//     Flush, AtomicWrite or Read implies the completion of every earlier
//     Write".
//
// Buffer ownership: the local memory an Op reads from or writes into (the
// source of a Write or Send, the destination of a Read or Recv) belongs to
// the provider from the call until the Op is done; the caller must not
// touch it meanwhile. The target's registered memory may be read and written
// by the target program at any time; RDMA gives no atomicity beyond the
// 8-byte AtomicWrite.
//
// Errors: an argument error (bounds against the descriptor, a missing usage
// bit, a refused persistence flush, a misaligned atomic write) completes the
// Op at once with the error and leaves the Conn usable. An error reported by
// the target (bad key, bounds, access rights) or a transport failure poisons
// the Conn, as on a reliable-connected queue pair: the failing Op gets the
// cause, every other pending and later Op gets ErrPoisoned wrapping it, and
// the Conn's Events report Lost.
//
// A Conn whose peer sends nothing for Config.AckTimeout while Ops are
// pending is lost (ErrConnLost), as a reliable connection gives up after
// its retries.
//
// # Access
//
// Every Conn of a Peer may reach every MR of the Peer whose Descriptor
// (key) the other side holds, within the MR's usage bits. Deregister
// revokes a key. Conns implementing AccessSwitcher can also have their
// one-sided access switched off and on as a whole (Mu's permission
// switch); Config.DenyOnAccept makes accepted Conns start switched off.
//
// Concurrency: every method of Peer, Listener, Conn, MR, Op and CQ may be
// called from any goroutine concurrently, except that MR.Deregister must
// not race with operations that use the MR locally.
//
// Memory: registered memory must not be Go heap memory for the verbs
// provider (the NIC keeps its address beyond any call); use Alloc or a
// pmem mapping. The tcp provider accepts any slice, but the race detector
// cannot see the socket that orders remote stores, so tests use Alloc too.
package rdma
