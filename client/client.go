// Package client is the Go client of a stream node's client service
// (api/): create, delete and list streams, append, read, tail and status,
// and the catalog's controller group (ClusterStatus, AddVoter,
// RemoveVoter).
//
// A Client is safe for concurrent use. Its appends are idempotent: the
// Client names itself with a producer id (random unless Options.ProducerID
// says otherwise) and numbers its appends, and it retries an append that
// failed with Unavailable (a node restarting, a connection lost) with the
// same number, so that an append the node had stored before the failure is
// answered with its original position instead of being stored twice. The
// node remembers a window of recent numbers per producer (node.Config
// IdempotenceWindow), across its restarts too (it reads them back from
// the entries); a retry that falls behind more than a window of later
// appends of the same Client is refused with FailedPrecondition, since it
// may have been stored.
//
// An Appender (NewAppender) keeps many appends in flight on one
// AppendStream call and batches them: an append made while the call has
// requests in flight is queued, and a sender goroutine sends what queued
// meanwhile as one batch request (AppendRequest.batch, consecutive
// sequence numbers), answered at once by the node; an append on an idle
// call goes out at once. A broken call's unanswered appends are sent
// again, in batches, with their numbers. AppendBatch sends a batch the
// caller made as one unary request.
//
// Errors are gRPC status errors (google.golang.org/grpc/status); api.proto
// lists the codes.
//
// # Nothing waits for ever
//
// Every call the Client retries (appends, batches, reads, status, lists),
// every append of an Appender and every reconnection of a Tail ends
// within Options.Timeout (DefaultTimeout, 15 s, unless set): when the
// policy of a stream cannot be met (acks all with a copy down, a quorum
// lost), the node answers Unavailable after its QuorumWait (5 s by
// default) saying so, and the Client tries again, with the same sequence
// numbers, until Timeout has passed since the append was made; it then
// fails with an error that errors.Is ErrTimeout, whose gRPC code is
// Unavailable and whose message carries the last reason a node gave. A
// node that answers nothing at all (hung) is given up on the same way.
// The context of a call may end it sooner.
//
// # Leaders and seeds
//
// A stream is led by one node of a cluster; the Client may be dialled to
// any of them, or to several (Dial's "a,b,c", Options.Seeds): the seeds.
// A node that does not lead a stream answers with a leader hint
// (FailedPrecondition with api.NotLeader details); the Client then
// connects to the leader's client address, remembers it for that stream,
// and sends the call again there (a refused call stored nothing, so this
// is safe for appends). When the remembered leader becomes Unavailable
// (it died, or the leadership moved), the Client forgets it and asks a
// seed again, which names the stream's current leader: the next seed in
// turn when the one asked is Unavailable too, with a backoff from
// Options.Backoff doubling to Options.MaxBackoff between attempts. The
// seeds grow with every leader address a hint names and, once a node
// is found Unavailable, with the client addresses of the members a node
// lists (Members), so that a Client dialled to one node still finds the
// others when that node dies. A retried append keeps its producer id and
// sequence numbers whichever node it is sent to, so an append the old
// leader stored and a copy kept is answered by the new leader with its
// original position, never stored twice.
//
// Reads and tails are the exception: a node holding a copy of the stream
// answers them itself, from its copy, up to the commit point the copy
// knows; a Tail whose node dies resumes, after its last entry, at the
// next seed (a copy, or the leader it names). A copy's commit point may lag the leader's for a moment (the
// leader publishes it lazily), so a read sent to such a node right after
// an append may not show that append yet. For read-your-writes, dial the
// stream's leader (StreamStatus names it) and read there.
package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/pki"
)

// MaxMessageSize is the largest gRPC message a Client sends or receives
// (api.MaxMessageSize, the node's limit too).
const MaxMessageSize = api.MaxMessageSize

// DefaultTimeout is Options.Timeout when it is zero: three of a node's
// default QuorumWait (5 s), so that an append is tried at least twice
// more after a node first says its policy cannot be met, and long enough
// for a leader's failover or a restart of its node with default settings.
const DefaultTimeout = 15 * time.Second

// ErrTimeout is wrapped by the error of a call, an Appender's append or a
// Tail that was not answered within Options.Timeout. Its gRPC code
// (status.Code) is Unavailable, and its message carries the last failure
// a node reported.
var ErrTimeout = errors.New("client: not answered within the timeout")

// Options configure Dial. The zero value is usable.
type Options struct {
	// ProducerID names this client's appends for idempotence; empty means
	// a random id. Two live clients must never share one.
	ProducerID string
	// Seeds are client addresses (HOST:PORT) of more nodes of the
	// cluster, asked in turn, after those Dial was given, when the node
	// asked is Unavailable.
	Seeds []string
	// Timeout bounds how long the Client keeps trying: a call it retries
	// from its first attempt to its answer, an Appender's append from
	// Append to its answer, a Tail from its last entry (or start) to the
	// next answer. Then it fails with ErrTimeout (gRPC code Unavailable)
	// and the last reason a node gave. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxAttempts, if not zero, also bounds how many times an append, a
	// read or a tail reconnection is tried while nodes are Unavailable
	// (for an Appender: calls broken in a row without an answer). Zero
	// means no bound but Timeout.
	MaxAttempts int
	// Backoff is the wait before the first retry, doubled on each retry
	// up to MaxBackoff; zero means 20 ms.
	Backoff time.Duration
	// MaxBackoff bounds the wait between retries; zero means one second.
	// gRPC's reconnection to a node lost follows the same backoff.
	MaxBackoff time.Duration
	// DialOptions are passed to grpc.NewClient after the client's own
	// (transport, message size limits, reconnection backoff).
	DialOptions []grpc.DialOption

	// TLS, if set, makes every connection to a node TLS with this config
	// (pki.ClientConfig makes one). Otherwise TLSCAFile, if set, turns
	// TLS on: the nodes' certificates must chain to the CA in that PEM
	// file and name the address dialled; TLSCertFile and TLSKeyFile, if
	// set, are the client certificate presented (its name is the
	// caller's identity to a node's ACL). Without either, connections are
	// plaintext.
	TLS         *tls.Config
	TLSCAFile   string
	TLSCertFile string
	TLSKeyFile  string
	// Token, or else the contents of TokenFile (a trailing newline is
	// not part of it), is sent as a bearer token with every call: the
	// caller's identity to a node's ACL. It needs TLS.
	Token     string
	TokenFile string
}

// TLSConfig returns the TLS config connections to nodes use: TLS, or
// one made from TLSCAFile, TLSCertFile and TLSKeyFile; nil when
// connections are plaintext. Probe takes it, to check an address the
// way the client will dial it.
func (opts Options) TLSConfig() (*tls.Config, error) {
	if opts.TLS != nil || (opts.TLSCAFile == "" && opts.TLSCertFile == "" && opts.TLSKeyFile == "") {
		return opts.TLS, nil
	}
	cfg, err := pki.ClientConfig(opts.TLSCAFile, opts.TLSCertFile, opts.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return cfg, nil
}

// transport returns the transport credentials and the per-call
// credentials opts describe.
func (opts Options) transport() ([]grpc.DialOption, error) {
	cfg, err := opts.TLSConfig()
	if err != nil {
		return nil, err
	}
	token := opts.Token
	if token == "" && opts.TokenFile != "" {
		b, err := os.ReadFile(opts.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("client: token file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return nil, fmt.Errorf("client: token file %s is empty", opts.TokenFile)
		}
	}
	if cfg == nil {
		if token != "" {
			return nil, errors.New("client: a bearer token needs TLS (TLSCAFile or TLS): it would cross the network in clear")
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	dopts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	return dopts, nil
}

// bearer is a token sent as "authorization: Bearer TOKEN", over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// Client talks to its seeds and to the leaders they name.
type Client struct {
	dopts      []grpc.DialOption
	api        api.StreamsClient // the first seed's
	producer   string
	seq        atomic.Uint64
	attempts   int
	backoff    time.Duration
	maxBackoff time.Duration
	timeout    time.Duration

	// routes are the connections and the address book, shared with the
	// Clients made by NewProducer.
	*routes
	shared bool // made by NewProducer: Close leaves the connections open
}

// routes are the connections of a Client and of the Clients NewProducer
// made from it, the addresses it knows and the leader of each stream.
type routes struct {
	// mu guards everything below.
	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn // by address
	leaders map[string]string           // stream -> leader's address
	// seeds are the addresses asked when no leader is known: Dial's,
	// Options.Seeds, then those learned (hints, Members); cur is the
	// one asked now, moved on when it is Unavailable.
	seeds []string
	cur   int
	// stale is set when a node was Unavailable: the members are asked
	// again (learnMembers) before the next retry, at most once per
	// learnEvery.
	stale   bool
	learned time.Time
	closed  bool
}

// maxHops bounds how many leader hints one attempt follows in a row.
const maxHops = 4

// learnEvery is the least time between two learnMembers.
const learnEvery = 2 * time.Second

// Entry is one entry of a stream.
type Entry struct {
	Position uint64
	Data     []byte
	// Time is when the leader appended the entry (increasing with
	// positions); zero for entries stored before entries carried times.
	Time time.Time
}

// Dial returns a client of the cluster whose node's client address is
// addr (HOST:PORT), or of several of its nodes: "HOST:PORT,HOST:PORT,...",
// with Options.Seeds after them; an address without a port gets
// DefaultPort (WithDefaultPort). It does not wait for a connection: the
// first call does (Probe checks an address at once).
func Dial(addr string, opts Options) (*Client, error) {
	if opts.MaxAttempts < 0 || opts.Backoff < 0 || opts.MaxBackoff < 0 || opts.Timeout < 0 {
		return nil, errors.New("client: negative MaxAttempts, Backoff, MaxBackoff or Timeout")
	}
	var seeds []string
	for _, a := range append(strings.Split(addr, ","), opts.Seeds...) {
		if a = WithDefaultPort(a); a != "" && !slices.Contains(seeds, a) {
			seeds = append(seeds, a)
		}
	}
	if len(seeds) == 0 {
		return nil, errors.New("client: no address given")
	}
	c := &Client{producer: opts.ProducerID, attempts: opts.MaxAttempts, backoff: opts.Backoff, maxBackoff: opts.MaxBackoff, timeout: opts.Timeout,
		routes: &routes{conns: map[string]*grpc.ClientConn{}, leaders: map[string]string{}, seeds: seeds}}
	if c.backoff == 0 {
		c.backoff = 20 * time.Millisecond
	}
	if c.maxBackoff == 0 {
		c.maxBackoff = time.Second
	}
	c.backoff = min(c.backoff, c.maxBackoff)
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	tr, err := opts.transport()
	if err != nil {
		return nil, err
	}
	c.dopts = append(tr, []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		// A restarted node is connected to again as soon as the
		// Client's own retries would ask it (gRPC's default backoff
		// grows to two minutes, and calls fail at once meanwhile), and
		// a connection that does not complete is given up on in time
		// to ask another seed within Timeout.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: c.backoff, Multiplier: 2, Jitter: 0.2, MaxDelay: c.maxBackoff},
			MinConnectTimeout: 3 * time.Second,
		}),
	}...)
	c.dopts = append(append(c.dopts, transportOptions()...), opts.DialOptions...)
	for _, a := range seeds {
		cc, err := grpc.NewClient(a, c.dopts...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("client: %s: %w", a, err)
		}
		c.conns[a] = cc
	}
	c.api = api.NewStreamsClient(c.conns[seeds[0]])
	if c.producer == "" {
		c.producer = randomProducer()
	}
	return c, nil
}

func randomProducer() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewProducer returns a Client on c's connections under a new random
// producer id with its own sequence numbers, and c's retry settings.
// Many goroutines appending through one connection each get one, so that
// each producer's appends in flight stay within the node's idempotence
// window (an Appender keeps up to MaxInFlight). Closing it does nothing:
// the connections are c's, and closing c ends the calls of both.
func (c *Client) NewProducer() *Client {
	return &Client{dopts: c.dopts, api: c.api, producer: randomProducer(), attempts: c.attempts, backoff: c.backoff, maxBackoff: c.maxBackoff,
		timeout: c.timeout, routes: c.routes, shared: true}
}

// Close closes the connections; calls in flight fail. On a Client made
// by NewProducer it does nothing.
func (c *Client) Close() error {
	if c.shared {
		return nil
	}
	c.mu.Lock()
	conns := c.conns
	c.conns, c.closed = nil, true
	c.mu.Unlock()
	var err error
	for _, cc := range conns {
		if cerr := cc.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// connLocked is the client service at addr, connecting if need be; nil
// after Close or for an address gRPC refuses.
func (r *routes) connLocked(dopts []grpc.DialOption, addr string) api.StreamsClient {
	if r.closed {
		return nil
	}
	if cc := r.conns[addr]; cc != nil {
		return api.NewStreamsClient(cc)
	}
	cc, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil
	}
	r.conns[addr] = cc
	return api.NewStreamsClient(cc)
}

// home is the seed asked now and its address.
func (c *Client) home() (api.StreamsClient, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := c.seeds[c.cur]
	if rpc := c.connLocked(c.dopts, addr); rpc != nil {
		return rpc, addr
	}
	return c.api, c.seeds[0]
}

// stub is the client service of stream's leader, as far as the Client
// knows it (the seed asked now when it knows none), and its address.
func (c *Client) stub(stream string) (api.StreamsClient, string) {
	c.mu.Lock()
	addr, ok := c.leaders[stream]
	if ok {
		if rpc := c.connLocked(c.dopts, addr); rpc != nil {
			c.mu.Unlock()
			return rpc, addr
		}
		delete(c.leaders, stream)
	}
	c.mu.Unlock()
	return c.home()
}

// Leader returns the client address of stream's leader as far as the
// Client knows it ("" when it knows none: calls go to a seed).
func (c *Client) Leader(stream string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaders[stream]
}

// Seeds are the addresses the Client asks when it knows no leader: those
// it was given, then those it learned.
func (c *Client) Seeds() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seeds)
}

// addSeedLocked adds addr to the seeds if it is new.
func (r *routes) addSeedLocked(addr string) {
	if addr != "" && !slices.Contains(r.seeds, addr) {
		r.seeds = append(r.seeds, addr)
	}
}

// follow handles err of a call about stream sent to addr: it remembers
// the leader a hint names, or forgets a remembered leader that refused
// the call (FailedPrecondition), and reports true (send the call again at
// once); or, when addr was Unavailable, forgets it as the stream's leader
// and moves on to the next seed, and reports false.
func (c *Client) follow(stream, addr string, err error) bool {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return false
	}
	switch st.Code() {
	case codes.FailedPrecondition:
		for _, d := range st.Details() {
			if nl, ok := d.(*api.NotLeader); ok && nl.LeaderAddr != "" && nl.LeaderAddr != addr {
				c.mu.Lock()
				c.leaders[stream] = nl.LeaderAddr
				c.addSeedLocked(nl.LeaderAddr)
				c.mu.Unlock()
				return true
			}
		}
		// Refused by the leader remembered, without a hint: it may
		// have been deposed (fenced by a newer epoch). Ask a seed who
		// leads now; if it is the same node, its answer stands (the
		// hops are bounded). A refusal stores nothing, and a retry
		// keeps its sequence numbers.
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.leaders[stream] == addr {
			delete(c.leaders, stream)
			return true
		}
	case codes.Unavailable:
		c.unreachable(stream, addr)
	case codes.NotFound:
		// The stream moved, or is gone: ask a seed again.
		c.mu.Lock()
		delete(c.leaders, stream)
		c.mu.Unlock()
	}
	return false
}

// unreachable notes that addr answered Unavailable (or could not be
// reached) for a call about stream ("" for none): it is forgotten as the
// stream's leader, and the next seed is asked from now on if it was the
// one asked.
func (c *Client) unreachable(stream, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if stream != "" && c.leaders[stream] == addr {
		delete(c.leaders, stream)
	}
	if c.seeds[c.cur] == addr {
		c.cur = (c.cur + 1) % len(c.seeds)
	}
	c.stale = true
}

// learnMembers adds the client addresses of the members a node lists to
// the seeds, if a node was Unavailable since it last did and learnEvery
// has passed: asked of each seed in turn, one second each, until one
// answers.
func (c *Client) learnMembers(ctx context.Context) {
	c.mu.Lock()
	if !c.stale || time.Since(c.learned) < learnEvery || c.closed {
		c.mu.Unlock()
		return
	}
	c.stale, c.learned = false, time.Now()
	seeds := slices.Clone(c.seeds)
	start := c.cur
	c.mu.Unlock()
	for i := range seeds {
		addr := seeds[(start+i)%len(seeds)]
		c.mu.Lock()
		rpc := c.connLocked(c.dopts, addr)
		c.mu.Unlock()
		if rpc == nil {
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, time.Second)
		r, err := rpc.Members(mctx, &api.MembersRequest{})
		cancel()
		if err != nil {
			continue
		}
		c.mu.Lock()
		for _, m := range r.Members {
			if m.Role != api.Role_ROLE_BACKUP {
				c.addSeedLocked(m.ClientAddr)
			}
		}
		c.mu.Unlock()
		return
	}
}

// retryStream is retry for a call about stream, sent to its leader as
// far as the Client knows it: it follows leader hints (at most maxHops in
// a row) as well.
func (c *Client) retryStream(ctx context.Context, stream, what string, f func(ctx context.Context, rpc api.StreamsClient) error) error {
	return c.retry(ctx, what, func(ctx context.Context) error {
		for hops := 0; ; hops++ {
			rpc, addr := c.stub(stream)
			err := f(ctx, rpc)
			if c.follow(stream, addr, err) && hops < maxHops {
				continue
			}
			return err
		}
	})
}

// retryHome is retry for a call about no stream, sent to a seed.
func (c *Client) retryHome(ctx context.Context, what string, f func(ctx context.Context, rpc api.StreamsClient) error) error {
	return c.retry(ctx, what, func(ctx context.Context) error {
		rpc, addr := c.home()
		err := f(ctx, rpc)
		if status.Code(err) == codes.Unavailable {
			c.unreachable("", addr)
		}
		return err
	})
}

// ProducerID is the id naming this client's appends.
func (c *Client) ProducerID() string { return c.producer }

// API is the generated client of the first address the Client was
// dialled to, for what this package does not wrap.
func (c *Client) API() api.StreamsClient { return c.api }

// retry runs f until it succeeds, fails with another code than
// Unavailable, ctx ends, the attempts run out or Timeout passes (then
// ErrTimeout with the last failure; what names the call in its message).
func (c *Client) retry(ctx context.Context, what string, f func(ctx context.Context) error) error {
	deadline := time.Now().Add(c.timeout)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	b := c.newBackoff()
	var last error
	for attempt := 1; ; attempt++ {
		err := f(dctx)
		// gRPC's own timer may end the call before dctx's marks it done.
		if err != nil && ctx.Err() == nil && (dctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded && !time.Now().Before(deadline)) {
			// Cut by Timeout: last is the failure before, if any.
			return c.timedOut(what, last)
		}
		if status.Code(err) != codes.Unavailable || (c.attempts > 0 && attempt >= c.attempts) || ctx.Err() != nil {
			return err
		}
		last = reason(last, err)
		c.learnMembers(dctx)
		if !b.sleep(dctx) {
			if ctx.Err() != nil {
				return err
			}
			return c.timedOut(what, err)
		}
	}
}

// backoffTimer is the wait between retries: Options.Backoff doubling to
// Options.MaxBackoff.
type backoffTimer struct {
	next, max time.Duration
}

func (c *Client) newBackoff() *backoffTimer {
	return &backoffTimer{next: c.backoff, max: c.maxBackoff}
}

// sleep waits for the next backoff, or until ctx ends (false).
func (b *backoffTimer) sleep(ctx context.Context) bool {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// reset starts the waits again from Options.Backoff.
func (b *backoffTimer) reset(c *Client) { b.next = c.backoff }

// reason is the failure an ErrTimeout reports given the one kept so far
// (last) and a new one (err): the newest, except that a node's own answer
// (quorum lost, a leader down) is not replaced by a failure to reach some
// other node (connection refused by a member that is down), which says
// less about why the call cannot be served.
func reason(last, err error) error {
	if last != nil && unreachable(err) && !unreachable(last) {
		return last
	}
	return err
}

// unreachable says whether err is gRPC's failure to reach a node or keep
// its connection rather than a node's answer.
func unreachable(err error) bool {
	msg := status.Convert(err).Message()
	for _, s := range []string{"connection error", "transport is closing", "error reading from server", "name resolver error", "while dialing"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// timeoutError is ErrTimeout with the call's description and its last
// failure.
type timeoutError struct {
	msg  string
	last error
}

func (e *timeoutError) Error() string        { return e.msg }
func (e *timeoutError) Unwrap() error        { return e.last }
func (e *timeoutError) Is(target error) bool { return target == ErrTimeout }

// GRPCStatus makes status.Code report Unavailable.
func (e *timeoutError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.msg) }

// timedOut is the error of what, given up after Timeout; last is the
// last failure seen (nil: no answer at all).
func (c *Client) timedOut(what string, last error) error {
	why := "no answer"
	if last != nil {
		why = "last: " + status.Convert(last).Message()
	}
	return &timeoutError{msg: fmt.Sprintf("%s: not answered within %v (client timeout); %s", what, c.timeout, why), last: last}
}

// CreateOptions are the settings of a new stream.
type CreateOptions struct {
	Replicas   int            // 0 means 1
	Acks       api.AckPolicy  // 0 means quorum
	RegionSize int            // 0 means the node's default
	Retention  *api.Retention // nil: kept until trimmed
}

// Create creates stream name and returns its status.
func (c *Client) Create(ctx context.Context, name string, o CreateOptions) (*api.StreamStatusResponse, error) {
	if o.Replicas < 0 || o.RegionSize < 0 {
		return nil, errors.New("client: negative Replicas or RegionSize")
	}
	// Not retried (a create carried out would then report
	// AlreadyExists), but a seed found Unavailable is not asked next.
	rpc, addr := c.home()
	r, err := rpc.CreateStream(ctx, &api.CreateStreamRequest{Stream: name, Replicas: uint32(o.Replicas), Acks: o.Acks, RegionSize: uint64(o.RegionSize), Retention: o.Retention})
	if err != nil {
		if status.Code(err) == codes.Unavailable {
			c.unreachable("", addr)
		}
		return nil, err
	}
	return r.Status, nil
}

// Delete deletes stream name.
func (c *Client) Delete(ctx context.Context, name string) error {
	// Not retried when Unavailable (a delete carried out would then
	// report NotFound); leader hints are followed.
	for hops := 0; ; hops++ {
		rpc, addr := c.stub(name)
		_, err := rpc.DeleteStream(ctx, &api.DeleteStreamRequest{Stream: name})
		if !c.follow(name, addr, err) || hops >= maxHops {
			return err
		}
	}
}

// List names the node's streams.
func (c *Client) List(ctx context.Context) ([]string, error) {
	var r *api.ListStreamsResponse
	err := c.retryHome(ctx, "list", func(ctx context.Context, rpc api.StreamsClient) (err error) {
		r, err = rpc.ListStreams(ctx, &api.ListStreamsRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return r.Streams, nil
}

// Append appends data to stream as one entry and returns its position
// once it is durable, retrying while the node is Unavailable (see the
// package comment: a retry is not stored twice), for at most
// Options.Timeout (then ErrTimeout).
func (c *Client) Append(ctx context.Context, stream string, data []byte) (uint64, error) {
	req := &api.AppendRequest{Stream: stream, Data: data, ProducerId: c.producer, Sequence: c.seq.Add(1)}
	var r *api.AppendResponse
	err := c.retryStream(ctx, stream, "append to "+stream, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		r, err = rpc.Append(ctx, req)
		return err
	})
	if err != nil {
		return 0, err
	}
	return r.Position, nil
}

// AppendBatch appends entries to stream as consecutive entries of one
// request (AppendRequest.batch: at most 4096 entries and 60 MiB, else
// InvalidArgument) and returns their positions, in order, once the last
// is durable, retrying while the node is Unavailable with the same
// sequence numbers (none stored twice), for at most Options.Timeout. The positions are consecutive
// unless other appends to the stream ran at the same time.
func (c *Client) AppendBatch(ctx context.Context, stream string, entries [][]byte) ([]uint64, error) {
	if len(entries) == 0 {
		return nil, errors.New("client: an empty batch")
	}
	last := c.seq.Add(uint64(len(entries)))
	req := &api.AppendRequest{Stream: stream, Batch: entries, ProducerId: c.producer, Sequence: last - uint64(len(entries)) + 1}
	var r *api.AppendResponse
	err := c.retryStream(ctx, stream, "append to "+stream, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		r, err = rpc.Append(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(r.Positions) != len(entries) {
		return nil, fmt.Errorf("client: %d positions answered for a batch of %d", len(r.Positions), len(entries))
	}
	return r.Positions, nil
}

// Read returns up to max committed entries of stream from position from
// (max 0 means the node's default) and the position to read next.
func (c *Client) Read(ctx context.Context, stream string, from uint64, max int) ([]Entry, uint64, error) {
	if max < 0 {
		return nil, from, errors.New("client: negative max")
	}
	var r *api.ReadResponse
	err := c.retryStream(ctx, stream, "read of "+stream, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		r, err = rpc.Read(ctx, &api.ReadRequest{Stream: stream, From: from, MaxEntries: uint32(min(max, 1<<31))})
		return err
	})
	if err != nil {
		return nil, from, err
	}
	out := make([]Entry, len(r.Entries))
	for i, e := range r.Entries {
		out[i] = entryOf(e)
	}
	return out, r.Next, nil
}

// Status describes stream.
func (c *Client) Status(ctx context.Context, stream string) (*api.StreamStatusResponse, error) {
	var r *api.StreamStatusResponse
	err := c.retryStream(ctx, stream, "status of "+stream, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		r, err = rpc.StreamStatus(ctx, &api.StreamStatusRequest{Stream: stream})
		return err
	})
	return r, err
}

// Members lists the cluster's members as the node knows them.
func (c *Client) Members(ctx context.Context) ([]*api.Member, error) {
	var r *api.MembersResponse
	err := c.retryHome(ctx, "members", func(ctx context.Context, rpc api.StreamsClient) (err error) {
		r, err = rpc.Members(ctx, &api.MembersRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return r.Members, nil
}

// ClusterStatus describes the catalog's controller group and the nodes it
// knows, as the node the Client was dialled to sees them, retrying while
// that node is Unavailable. An empty Controller in the answer says the
// node knows no controller (Raft leader): too few voters are up, or an
// election is under way; the rest is still the node's view. A node
// running alone, without a catalog, answers FailedPrecondition.
func (c *Client) ClusterStatus(ctx context.Context) (*api.ClusterStatusResponse, error) {
	var r *api.ClusterStatusResponse
	err := c.retryHome(ctx, "cluster status", func(ctx context.Context, rpc api.StreamsClient) (err error) {
		r, err = rpc.ClusterStatus(ctx, &api.ClusterStatusRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// AddVoter promotes node, a follower of the catalog (listed in
// ClusterStatusResponse.Followers), to a controller voter, and returns
// once the group has applied the change. The node it is sent to passes it
// to the controller and waits for one while none answers; its errors:
// FailedPrecondition when node does not follow the catalog (unknown, not
// registered, or not caught up yet), InvalidArgument when it votes
// already, Unavailable when no controller answered in time.
func (c *Client) AddVoter(ctx context.Context, node string) error {
	return c.changeVoter(ctx, node, false)
}

// RemoveVoter demotes node, a controller voter, to a follower of the
// catalog without a vote, and returns once the group has applied the
// change. Its errors are AddVoter's, and InvalidArgument when node is not
// a voter or is the only one.
func (c *Client) RemoveVoter(ctx context.Context, node string) error {
	return c.changeVoter(ctx, node, true)
}

func (c *Client) changeVoter(ctx context.Context, node string, remove bool) error {
	if node == "" {
		return errors.New("client: empty node name")
	}
	// Not retried when Unavailable: the node already waited for a
	// controller, and a change carried out would then be refused as done
	// already (InvalidArgument).
	rpc, _ := c.home()
	_, err := rpc.ChangeVoter(ctx, &api.ChangeVoterRequest{Node: node, Remove: remove})
	return err
}
