package rdma

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// ProtocolVersion is the version of the handshake and of every provider's
// wire protocol spoken by this package. Peers with different versions do
// not connect (ErrVersion).
const ProtocolVersion = 2

// Errors returned by this package and by its providers. Match them with
// errors.Is; the text after the prefix is for people.
var (
	// ErrConfig is returned by Config.Validate and by constructors given an
	// invalid Config.
	ErrConfig = errors.New("rdma: invalid config")
	// ErrAuth is returned by Dial and Accept when the peer does not prove
	// knowledge of the shared secret, or rejects ours.
	ErrAuth = errors.New("rdma: peer authentication failed")
	// ErrVersion is returned by Dial and Accept when the peer speaks another
	// protocol version.
	ErrVersion = errors.New("rdma: protocol version mismatch")
	// ErrHandshake is returned by Dial and Accept when the peer's handshake
	// is malformed.
	ErrHandshake = errors.New("rdma: malformed handshake")
	// ErrClosed is returned by operations on a closed Peer, Listener or
	// Conn, and by Ops aborted by a local Close.
	ErrClosed = errors.New("rdma: closed")
	// ErrPoisoned wraps the cause for every Op of a Conn that an earlier
	// error completion or a transport failure has put in the error state.
	ErrPoisoned = errors.New("rdma: connection in error state")
	// ErrConnLost is the cause when the peer disconnects or dies.
	ErrConnLost = errors.New("rdma: connection lost")
	// ErrRemoteAccess is the cause when the target rejected a request: an
	// unknown or revoked key, a range outside the registration, or a missing
	// usage bit. The target tears the connection down.
	ErrRemoteAccess = errors.New("rdma: remote access error")
	// ErrRemoteFailure is the cause when the target could not carry out a
	// valid request (its persister failed).
	ErrRemoteFailure = errors.New("rdma: remote operation failed")
	// ErrProtocol is the cause when the peer sent bytes that violate the
	// wire protocol.
	ErrProtocol = errors.New("rdma: protocol violation by peer")
	// ErrPersistUnsupported is returned for a persistence Flush when the
	// target did not declare that writes reach persistent memory, or the
	// remote registration lacks UsageFlushPersistence (librpma refuses it
	// the same way).
	ErrPersistUnsupported = errors.New("rdma: target cannot flush to persistence")
	// ErrBounds is returned when an operation's range falls outside a
	// local registration or a remote descriptor.
	ErrBounds = errors.New("rdma: range outside the registered memory")
	// ErrUsage is returned when a registration lacks the usage bit an
	// operation needs.
	ErrUsage = errors.New("rdma: registration lacks the needed usage")
	// ErrAlign is returned for an AtomicWrite not aligned to 8 bytes.
	ErrAlign = errors.New("rdma: atomic write must be 8-byte aligned")
	// ErrTooLarge is returned for a Send larger than the peer's MaxMessage,
	// or a transfer larger than Config.MaxTransfer.
	ErrTooLarge = errors.New("rdma: transfer too large")
	// ErrBadDescriptor is returned by ParseDescriptor for anything but a
	// well-formed descriptor of a known version, and by operations given a
	// descriptor of another provider.
	ErrBadDescriptor = errors.New("rdma: malformed memory descriptor")
	// ErrNoDevice is returned by providers that need hardware which is
	// absent (no RDMA device, or the provider was not built in).
	ErrNoDevice = errors.New("rdma: no usable RDMA device")
	// ErrRegistered is returned by Deregister on an MR already deregistered.
	ErrRegistered = errors.New("rdma: memory not registered")
)

// Usage says what a registration may be used for. Remote bits are carried
// in the Descriptor and enforced by the target; local bits are checked by
// the initiator before it posts.
type Usage uint32

const (
	// UsageWriteDst: a remote peer may Write into it (remote).
	UsageWriteDst Usage = 1 << iota
	// UsageReadSrc: a remote peer may Read from it (remote).
	UsageReadSrc
	// UsageFlushVisibility: a remote peer may Flush it to visibility (remote).
	UsageFlushVisibility
	// UsageFlushPersistence: a remote peer may Flush it to persistence
	// (remote); the registration needs a Persister (tcp) or the peer must
	// declare DirectWriteToPmem (verbs).
	UsageFlushPersistence
	// UsageAtomicWrite: a remote peer may AtomicWrite into it (remote).
	UsageAtomicWrite
	// UsageWriteSrc: the source of local Writes.
	UsageWriteSrc
	// UsageReadDst: the destination of local Reads.
	UsageReadDst
	// UsageSend: the source of Sends.
	UsageSend
	// UsageRecv: the destination of Recvs.
	UsageRecv

	// RemoteUsage is every bit a Descriptor may carry.
	RemoteUsage = UsageWriteDst | UsageReadSrc | UsageFlushVisibility | UsageFlushPersistence | UsageAtomicWrite
	// LocalUsage is every bit that concerns only the registering side.
	LocalUsage = UsageWriteSrc | UsageReadDst | UsageSend | UsageRecv
	// AllUsage is every defined bit.
	AllUsage = RemoteUsage | LocalUsage
)

// FlushType says how far a Flush takes the bytes.
type FlushType uint8

const (
	// Visibility: the bytes are visible to the target's CPU.
	Visibility FlushType = 1
	// Persistence: the bytes are in the target's persistence domain.
	Persistence FlushType = 2
)

func (t FlushType) String() string {
	switch t {
	case Visibility:
		return "visibility"
	case Persistence:
		return "persistence"
	}
	return fmt.Sprintf("FlushType(%d)", uint8(t))
}

// Persister makes a range of a registration durable; off is relative to the
// start of the registered slice. pmem.Memory satisfies it when the whole
// mapping is registered; PersisterAt adapts it to a sub-range.
type Persister interface {
	Persist(off, n int) error
}

// PersistFunc adapts a function to Persister.
type PersistFunc func(off, n int) error

// Persist calls f.
func (f PersistFunc) Persist(off, n int) error { return f(off, n) }

// PersisterAt returns a Persister for a registration that starts base bytes
// into the memory p persists.
func PersisterAt(p Persister, base int) Persister {
	return PersistFunc(func(off, n int) error { return p.Persist(base+off, n) })
}

// Capability bits a peer declares in its Hello.
type Caps uint32

const (
	// CapPersistOnFlush: the target's CPU runs the registration's Persister
	// on a persistence Flush (tcp).
	CapPersistOnFlush Caps = 1 << iota
	// CapNativeFlush: the provider flushes with the RDMA FLUSH verb.
	CapNativeFlush
	// CapNativeAtomicWrite: the provider uses the RDMA ATOMIC WRITE verb.
	CapNativeAtomicWrite
)

// PeerInfo is what the other side of a Conn declared in the handshake.
type PeerInfo struct {
	Version           uint16
	Provider          string
	Caps              Caps
	DirectWriteToPmem bool
	MaxInflight       int
	MaxMessage        int
}

// Config configures a Peer. Copy DefaultConfig and set Secret.
type Config struct {
	// Secret is the shared secret both sides prove knowledge of. At least
	// MinSecret bytes. Required.
	Secret []byte
	// DirectWriteToPmem declares that this side's memory registered with
	// UsageFlushPersistence is persistent memory, so that peers may flush
	// it to persistence. Without it peers refuse persistence flushes.
	DirectWriteToPmem bool
	// MaxInflight bounds the operations pending on one Conn. Posting blocks
	// beyond it. The peer is told, and a peer that exceeds ours is cut off.
	MaxInflight int
	// MaxMessage bounds the size of one Send/Recv message.
	MaxMessage int
	// RecvQueue is how many messages that arrive before a Recv is posted are
	// kept; one more poisons the connection (the emulation of an exhausted
	// receive-not-ready retry).
	RecvQueue int
	// MaxTransfer bounds one Write or Read.
	MaxTransfer int
	// HandshakeTimeout bounds Dial's and Accept's handshake.
	HandshakeTimeout time.Duration
	// DenyOnAccept makes Conns accepted by this Peer start with one-sided
	// access switched off (rdma.AccessSwitcher) until SetRemoteAccess(true):
	// a target that hands access to one writer at a time (remote/) needs
	// connections to be born without it, since a Conn serves requests from
	// the moment its handshake ends, before Accept returns it.
	DenyOnAccept bool
	// AckTimeout is how long the oldest pending Op may wait for any sign
	// of life from the peer before the Conn is declared lost (the
	// emulation of a reliable connection's retry budget; a peer that is
	// frozen but keeps its socket open would otherwise stall Ops forever).
	AckTimeout time.Duration
	// TLS, if set, makes the tcp provider start every connection with a
	// TLS 1.3 handshake with this config (tls.Client when dialling,
	// tls.Server when accepting; both sides' certificates are checked by
	// the config), run the Secret handshake inside it, and then carry
	// the frames in records sealed under keys exported from that TLS
	// session (rdma/tcp's seal.go). The verbs provider ignores
	// it: on a NIC the data moves by the fabric, outside any socket (see
	// docs/design-notes.md, "Security").
	TLS *tls.Config
}

// MinSecret is the shortest Secret accepted.
const MinSecret = 16

// DefaultConfig returns the defaults; the caller must still set Secret.
func DefaultConfig() Config {
	return Config{
		MaxInflight:      256,
		MaxMessage:       4096,
		RecvQueue:        64,
		MaxTransfer:      1 << 30,
		HandshakeTimeout: 5 * time.Second,
		AckTimeout:       30 * time.Second,
	}
}

// LoopbackConfig is DefaultConfig with a secret, for tests on one machine.
func LoopbackConfig(secret string) Config {
	c := DefaultConfig()
	c.Secret = []byte(secret)
	c.DirectWriteToPmem = true
	c.HandshakeTimeout = 2 * time.Second
	return c
}

// Validate reports the first problem with c, wrapping ErrConfig.
func (c *Config) Validate() error {
	switch {
	case len(c.Secret) < MinSecret:
		return fmt.Errorf("%w: secret of %d bytes, need at least %d (no anonymous peers)", ErrConfig, len(c.Secret), MinSecret)
	case c.MaxInflight < 1 || c.MaxInflight > 1<<16:
		return fmt.Errorf("%w: MaxInflight %d not in [1, 65536]", ErrConfig, c.MaxInflight)
	case c.MaxMessage < 64 || c.MaxMessage > 1<<20:
		return fmt.Errorf("%w: MaxMessage %d not in [64, 1 MiB]", ErrConfig, c.MaxMessage)
	case c.RecvQueue < 0 || c.RecvQueue > 1<<12:
		return fmt.Errorf("%w: RecvQueue %d not in [0, 4096]", ErrConfig, c.RecvQueue)
	case c.MaxTransfer < 1 || c.MaxTransfer > 1<<31-1:
		return fmt.Errorf("%w: MaxTransfer %d not in [1, 2 GiB)", ErrConfig, c.MaxTransfer)
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("%w: HandshakeTimeout must be positive", ErrConfig)
	case c.AckTimeout <= 0:
		return fmt.Errorf("%w: AckTimeout must be positive", ErrConfig)
	}
	return nil
}

// Provider makes Peers of one kind.
type Provider interface {
	// Name is "tcp" or "verbs".
	Name() string
	// NewPeer opens the provider on the device serving the local address
	// addr (an IP, or "" for any; tcp ignores it). cfg is copied and
	// validated.
	NewPeer(addr string, cfg Config) (Peer, error)
}

// Peer owns registrations and connections; it is librpma's peer (an RDMA
// protection domain). Every Conn of a Peer may reach every MR of the Peer
// whose key the other side holds.
type Peer interface {
	// Register makes mem accessible to connections of this Peer with the
	// given usage. p persists ranges of mem on a persistence flush; it may
	// be nil unless usage has UsageFlushPersistence and the provider runs it
	// (tcp). mem must stay valid, and for verbs outside the Go heap, until
	// Deregister returns.
	Register(mem []byte, usage Usage, p Persister) (MR, error)
	// Listen accepts connections on addr ("127.0.0.1:0").
	Listen(ctx context.Context, addr string) (Listener, error)
	// Dial connects to a Listener at addr and runs the handshake.
	Dial(ctx context.Context, addr string) (Conn, error)
	// Close closes every Listener and Conn of the Peer and deregisters its
	// memory.
	Close() error
}

// MR is a registration of local memory.
type MR interface {
	// Bytes is the registered memory.
	Bytes() []byte
	// Usage is what it was registered for.
	Usage() Usage
	// Descriptor describes it to a remote peer: send its MarshalBinary.
	Descriptor() Descriptor
	// Deregister revokes it: from the moment it returns, requests that name
	// its key fail (and poison their connection), and no request touches
	// the memory. It waits for requests being served to finish.
	Deregister() error
}

// Listener accepts connections.
type Listener interface {
	// Accept waits for the next peer and runs the handshake. A peer that
	// fails the handshake gives an error wrapping ErrAuth, ErrVersion or
	// ErrHandshake; call Accept again for the next one. ctx bounds the wait.
	Accept(ctx context.Context) (Conn, error)
	// Addr is the address to Dial.
	Addr() string
	// Close stops accepting; established Conns stay open.
	Close() error
}

// Conn is a connection with both roles: it posts operations to the remote
// peer (initiator) and serves the remote peer's operations on local MRs
// (target). See the package comment for ordering and ownership.
type Conn interface {
	// Write copies src.Bytes()[srcOff:srcOff+n] into the remote memory dst
	// at dstOff. src needs UsageWriteSrc, dst UsageWriteDst. Completion
	// means the target has the bytes (not that they are visible or durable:
	// Flush for that).
	Write(dst Descriptor, dstOff int, src MR, srcOff, n int) *Op
	// Read copies n bytes of remote src at srcOff into dst at dstOff. dst
	// needs UsageReadDst, src UsageReadSrc.
	Read(dst MR, dstOff int, src Descriptor, srcOff, n int) *Op
	// AtomicWrite stores the 8 bytes v at dstOff (8-byte aligned) of dst as
	// one store, after every earlier Write. dst needs UsageAtomicWrite.
	AtomicWrite(dst Descriptor, dstOff int, v [8]byte) *Op
	// Flush makes [off, off+n) of dst, and every earlier Write, visible or
	// durable on the target according to t. dst needs the matching usage
	// bit; Persistence also needs a target that declared it persists.
	Flush(dst Descriptor, off, n int, t FlushType) *Op
	// Send sends src.Bytes()[off:off+n] (at most the peer's MaxMessage) as
	// one message. src needs UsageSend.
	Send(src MR, off, n int) *Op
	// Recv posts dst.Bytes()[off:off+n] for the next incoming message;
	// Op.Len says how long the message was. Messages that do not fit
	// poison the Conn. dst needs UsageRecv.
	Recv(dst MR, off, n int) *Op
	// Remote is what the peer declared in the handshake.
	Remote() PeerInfo
	// RemoteAddr is the peer's network address.
	RemoteAddr() string
	// Events delivers Established at once, then one of Closed or Lost. The
	// channel is buffered for all of them and never closed.
	Events() <-chan Event
	// Err is nil while the Conn is usable, else why it is not.
	Err() error
	// Close disconnects; pending Ops complete with ErrClosed. It waits for
	// the provider's goroutines of this Conn to exit.
	Close() error
}

// EventKind is a connection event.
type EventKind int

const (
	// Established: the handshake succeeded.
	Established EventKind = iota + 1
	// Closed: Close was called locally.
	Closed
	// Lost: the peer went away, or an error poisoned the Conn.
	Lost
)

func (k EventKind) String() string {
	switch k {
	case Established:
		return "established"
	case Closed:
		return "closed"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a connection event; Err says why for Lost.
type Event struct {
	Kind EventKind
	Err  error
}

// AccessSwitcher is implemented by Conns whose target side can stop and
// resume serving the peer's one-sided requests on that connection alone,
// the permission switch of the Mu system (a queue-pair access change, much
// cheaper than re-registering memory). Once SetRemoteAccess(false) has
// returned, every later Write, Read, AtomicWrite or Flush the peer sends
// on this Conn is rejected as an access violation (which poisons the
// peer's connection), and no Write, AtomicWrite or Flush of the peer is
// still being executed; Send and Recv keep working. Access is allowed when a Conn is established.
type AccessSwitcher interface {
	SetRemoteAccess(allowed bool) error
}

// Corker is implemented by Conns that can hold posted operations back and
// send them together: between Cork and the matching Uncork, posts (from any
// goroutine) are only queued; the last Uncork sends everything queued at
// once (the tcp provider: one vectored write). A batch of operations to one
// peer then costs one system call and, since the target answers what it
// read in one go, one acknowledgement. Cork and Uncork nest; every Cork
// must be matched by one Uncork, soon: nothing queued meanwhile moves.
type Corker interface {
	Cork()
	Uncork()
}
