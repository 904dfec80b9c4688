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
// # Leaders
//
// A stream is led by one node of a cluster; the Client may be dialled to
// any of them. A node that does not lead a stream answers with a leader
// hint (FailedPrecondition with api.NotLeader details); the Client then
// connects to the leader's client address, remembers it for that stream,
// and sends the call again there (a refused call stored nothing, so this
// is safe for appends). When the remembered leader becomes Unavailable,
// the Client forgets it and asks the node it was dialled to again.
//
// Reads and tails are the exception: a node holding a copy of the stream
// answers them itself, from its copy, up to the commit point the copy
// knows. A copy's commit point may lag the leader's for a moment (the
// leader publishes it lazily), so a read sent to such a node right after
// an append may not show that append yet. For read-your-writes, dial the
// stream's leader (StreamStatus names it) and read there.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
)

// MaxMessageSize is the largest gRPC message a Client sends or receives;
// it matches the node's limit.
const MaxMessageSize = 64 << 20

// Options configure Dial. The zero value is usable.
type Options struct {
	// ProducerID names this client's appends for idempotence; empty means
	// a random id. Two live clients must never share one.
	ProducerID string
	// MaxAttempts is how many times an append, a read or a tail
	// reconnection is tried while the node is Unavailable; zero means 10.
	MaxAttempts int
	// Backoff is the wait before the first retry, doubled on each retry
	// up to one second; zero means 20 ms.
	Backoff time.Duration
	// DialOptions are passed to grpc.NewClient after the client's own
	// (plaintext transport, message size limits).
	DialOptions []grpc.DialOption
}

// Client talks to the node it was dialled to and to the leaders that
// node names.
type Client struct {
	conn     *grpc.ClientConn
	rpc      api.StreamsClient
	dopts    []grpc.DialOption
	producer string
	seq      atomic.Uint64
	attempts int
	backoff  time.Duration

	// routes are the leaders' connections, shared with the Clients
	// made by NewProducer.
	*routes
	shared bool // made by NewProducer: Close leaves the connections open
}

// routes are the connections to leaders of a Client and of the Clients
// NewProducer made from it.
type routes struct {
	// mu guards the leaders' connections and the leader of each stream.
	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn // by address
	leaders map[string]string           // stream -> leader's address
	closed  bool
}

// maxHops bounds how many leader hints one call follows in a row.
const maxHops = 4

// Entry is one entry of a stream.
type Entry struct {
	Position uint64
	Data     []byte
}

// Dial returns a client of the node at addr (HOST:PORT). It does not wait
// for a connection: the first call does.
func Dial(addr string, opts Options) (*Client, error) {
	if opts.MaxAttempts < 0 || opts.Backoff < 0 {
		return nil, errors.New("client: negative MaxAttempts or Backoff")
	}
	dopts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
	}, opts.DialOptions...)
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c := &Client{conn: conn, rpc: api.NewStreamsClient(conn), dopts: dopts, producer: opts.ProducerID, attempts: opts.MaxAttempts, backoff: opts.Backoff,
		routes: &routes{conns: map[string]*grpc.ClientConn{}, leaders: map[string]string{}}}
	if c.producer == "" {
		c.producer = randomProducer()
	}
	if c.attempts == 0 {
		c.attempts = 10
	}
	if c.backoff == 0 {
		c.backoff = 20 * time.Millisecond
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
	return &Client{conn: c.conn, rpc: c.rpc, dopts: c.dopts, producer: randomProducer(), attempts: c.attempts, backoff: c.backoff,
		routes: c.routes, shared: true}
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
	for _, cc := range conns {
		cc.Close()
	}
	return c.conn.Close()
}

// stub is the client service of stream's leader, as far as the Client
// knows it (the node it was dialled to when it knows none).
func (c *Client) stub(stream string) api.StreamsClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr, ok := c.leaders[stream]
	if !ok || c.closed {
		return c.rpc
	}
	if cc := c.conns[addr]; cc != nil {
		return api.NewStreamsClient(cc)
	}
	cc, err := grpc.NewClient(addr, c.dopts...)
	if err != nil {
		delete(c.leaders, stream)
		return c.rpc
	}
	c.conns[addr] = cc
	return api.NewStreamsClient(cc)
}

// Leader returns the client address of stream's leader as far as the
// Client knows it ("" when it knows none: calls go to the node it was
// dialled to).
func (c *Client) Leader(stream string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaders[stream]
}

// follow handles err of a call about stream: it remembers the leader a
// hint names and reports true (send the call again at once), or forgets
// a leader that became unavailable and reports false.
func (c *Client) follow(stream string, err error) bool {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return false
	}
	switch st.Code() {
	case codes.FailedPrecondition:
		for _, d := range st.Details() {
			if nl, ok := d.(*api.NotLeader); ok && nl.LeaderAddr != "" {
				c.mu.Lock()
				c.leaders[stream] = nl.LeaderAddr
				c.mu.Unlock()
				return true
			}
		}
	case codes.Unavailable, codes.NotFound:
		// The leader went away (or the stream moved): ask the node the
		// Client was dialled to again.
		c.mu.Lock()
		delete(c.leaders, stream)
		c.mu.Unlock()
	}
	return false
}

// retryStream is retry for a call about stream: it follows leader hints
// (at most maxHops in a row) as well.
func (c *Client) retryStream(ctx context.Context, stream string, f func(rpc api.StreamsClient) error) error {
	hops := 0
	return c.retry(ctx, func() error {
		for {
			err := f(c.stub(stream))
			if c.follow(stream, err) && hops < maxHops {
				hops++
				continue
			}
			return err
		}
	})
}

// ProducerID is the id naming this client's appends.
func (c *Client) ProducerID() string { return c.producer }

// API is the generated client, for what this package does not wrap.
func (c *Client) API() api.StreamsClient { return c.rpc }

// retry runs f until it succeeds, fails with another code than
// Unavailable, ctx ends or the attempts run out.
func (c *Client) retry(ctx context.Context, f func() error) error {
	wait := c.backoff
	for attempt := 1; ; attempt++ {
		err := f()
		if status.Code(err) != codes.Unavailable || attempt >= c.attempts {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// CreateOptions are the settings of a new stream.
type CreateOptions struct {
	Replicas   int           // 0 means 1
	Acks       api.AckPolicy // 0 means quorum
	RegionSize int           // 0 means the node's default
}

// Create creates stream name and returns its status.
func (c *Client) Create(ctx context.Context, name string, o CreateOptions) (*api.StreamStatusResponse, error) {
	if o.Replicas < 0 || o.RegionSize < 0 {
		return nil, errors.New("client: negative Replicas or RegionSize")
	}
	r, err := c.rpc.CreateStream(ctx, &api.CreateStreamRequest{Stream: name, Replicas: uint32(o.Replicas), Acks: o.Acks, RegionSize: uint64(o.RegionSize)})
	if err != nil {
		return nil, err
	}
	return r.Status, nil
}

// Delete deletes stream name.
func (c *Client) Delete(ctx context.Context, name string) error {
	// Not retried when Unavailable (a delete carried out would then
	// report NotFound); leader hints are followed.
	for hops := 0; ; hops++ {
		_, err := c.stub(name).DeleteStream(ctx, &api.DeleteStreamRequest{Stream: name})
		if !c.follow(name, err) || hops >= maxHops {
			return err
		}
	}
}

// List names the node's streams.
func (c *Client) List(ctx context.Context) ([]string, error) {
	var r *api.ListStreamsResponse
	err := c.retry(ctx, func() (err error) {
		r, err = c.rpc.ListStreams(ctx, &api.ListStreamsRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return r.Streams, nil
}

// Append appends data to stream as one entry and returns its position
// once it is durable, retrying while the node is Unavailable (see the
// package comment: a retry is not stored twice).
func (c *Client) Append(ctx context.Context, stream string, data []byte) (uint64, error) {
	req := &api.AppendRequest{Stream: stream, Data: data, ProducerId: c.producer, Sequence: c.seq.Add(1)}
	var r *api.AppendResponse
	err := c.retryStream(ctx, stream, func(rpc api.StreamsClient) (err error) {
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
// sequence numbers (none stored twice). The positions are consecutive
// unless other appends to the stream ran at the same time.
func (c *Client) AppendBatch(ctx context.Context, stream string, entries [][]byte) ([]uint64, error) {
	if len(entries) == 0 {
		return nil, errors.New("client: an empty batch")
	}
	last := c.seq.Add(uint64(len(entries)))
	req := &api.AppendRequest{Stream: stream, Batch: entries, ProducerId: c.producer, Sequence: last - uint64(len(entries)) + 1}
	var r *api.AppendResponse
	err := c.retryStream(ctx, stream, func(rpc api.StreamsClient) (err error) {
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
	err := c.retryStream(ctx, stream, func(rpc api.StreamsClient) (err error) {
		r, err = rpc.Read(ctx, &api.ReadRequest{Stream: stream, From: from, MaxEntries: uint32(min(max, 1<<31))})
		return err
	})
	if err != nil {
		return nil, from, err
	}
	out := make([]Entry, len(r.Entries))
	for i, e := range r.Entries {
		out[i] = Entry{Position: e.Position, Data: e.Data}
	}
	return out, r.Next, nil
}

// Status describes stream.
func (c *Client) Status(ctx context.Context, stream string) (*api.StreamStatusResponse, error) {
	var r *api.StreamStatusResponse
	err := c.retryStream(ctx, stream, func(rpc api.StreamsClient) (err error) {
		r, err = rpc.StreamStatus(ctx, &api.StreamStatusRequest{Stream: stream})
		return err
	})
	return r, err
}

// Members lists the cluster's members as the node knows them.
func (c *Client) Members(ctx context.Context) ([]*api.Member, error) {
	var r *api.MembersResponse
	err := c.retry(ctx, func() (err error) {
		r, err = c.rpc.Members(ctx, &api.MembersRequest{})
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
	err := c.retry(ctx, func() (err error) {
		r, err = c.rpc.ClusterStatus(ctx, &api.ClusterStatusRequest{})
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
	_, err := c.rpc.ChangeVoter(ctx, &api.ChangeVoterRequest{Node: node, Remove: remove})
	return err
}
