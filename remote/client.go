package remote

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// Client is the writer's side of the control protocol on an established
// rdma Conn. Its methods may be called concurrently; requests go one at a
// time.
type Client struct {
	conn rdma.Conn
	buf  *rdma.Buffer
	mr   rdma.MR
	max  int

	mu   sync.Mutex // one request at a time; guards next
	next uint64
}

// NewClient registers a message buffer with peer (the Peer conn belongs
// to).
func NewClient(peer rdma.Peer, conn rdma.Conn) (*Client, error) {
	max := conn.Remote().MaxMessage // requests must fit the target's limit
	buf, err := rdma.Alloc(max + MaxResponse)
	if err != nil {
		return nil, err
	}
	mr, err := peer.Register(buf.Bytes(), rdma.UsageSend|rdma.UsageRecv, nil)
	if err != nil {
		buf.Free()
		return nil, err
	}
	return &Client{conn: conn, buf: buf, mr: mr, max: max}, nil
}

// Close releases the message buffer; it does not close the Conn. No
// request may be in progress.
func (c *Client) Close() error {
	c.mr.Deregister()
	return c.buf.Free()
}

// Region is a target's region slot as the writer sees it.
type Region struct {
	Index  int
	Offset int // in the stream file
	Desc   rdma.Descriptor
	Epoch  uint64
}

// Info asks for the target's layout and epoch.
func (c *Client) Info(ctx context.Context) (*remotepb.InfoResponse, error) {
	resp, err := c.call(ctx, &remotepb.Request{Body: &remotepb.Request_Info{Info: &remotepb.InfoRequest{}}})
	if err != nil {
		return nil, err
	}
	if resp.GetInfo() == nil {
		return nil, fmt.Errorf("%w: info response without a body", ErrMalformed)
	}
	return resp.GetInfo(), nil
}

// Grant makes this connection the writer for epoch.
func (c *Client) Grant(ctx context.Context, epoch uint64, writer string) error {
	resp, err := c.call(ctx, &remotepb.Request{Body: &remotepb.Request_Grant{Grant: &remotepb.GrantRequest{Epoch: epoch, Writer: writer}}})
	if err == nil && resp.GetGrant().GetEpoch() != epoch {
		err = fmt.Errorf("%w: grant answered for epoch %d", ErrMalformed, resp.GetGrant().GetEpoch())
	}
	return err
}

// Region asks for the descriptor of slot k (or of the stream file's
// header, HeaderSlot) under epoch.
func (c *Client) Region(ctx context.Context, epoch uint64, k int) (Region, error) {
	if k < 0 || (k > 1<<31 && k != HeaderSlot) {
		return Region{}, fmt.Errorf("%w: slot %d", ErrNoRegion, k)
	}
	resp, err := c.call(ctx, &remotepb.Request{Body: &remotepb.Request_Region{Region: &remotepb.RegionRequest{Epoch: epoch, Index: uint32(k)}}})
	if err != nil {
		return Region{}, err
	}
	r := resp.GetRegion()
	if r == nil || int(r.Index) != k {
		return Region{}, fmt.Errorf("%w: region response for another slot", ErrMalformed)
	}
	d, err := rdma.ParseDescriptor(r.RdmaDescriptor)
	if err != nil {
		return Region{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return Region{Index: k, Offset: int(r.Offset), Desc: d, Epoch: r.Epoch}, nil
}

// Open binds the connection to req's stream (see remotepb.OpenRequest);
// on a Hub it must come first.
func (c *Client) Open(ctx context.Context, req *remotepb.OpenRequest) (*remotepb.OpenResponse, error) {
	resp, err := c.call(ctx, &remotepb.Request{Body: &remotepb.Request_Open{Open: req}})
	if err != nil {
		return nil, err
	}
	if resp.GetOpen() == nil {
		return nil, fmt.Errorf("%w: open response without a body", ErrMalformed)
	}
	return resp.GetOpen(), nil
}

// Tail asks the target for the durable end of its replica's valid prefix,
// cut back to the writer's end given in req (see remotepb.TailRequest).
func (c *Client) Tail(ctx context.Context, req *remotepb.TailRequest) (*remotepb.TailResponse, error) {
	resp, err := c.call(ctx, &remotepb.Request{Body: &remotepb.Request_Tail{Tail: req}})
	if err != nil {
		return nil, err
	}
	if resp.GetTail() == nil {
		return nil, fmt.Errorf("%w: tail response without a body", ErrMalformed)
	}
	return resp.GetTail(), nil
}

// Call sends raw bytes as a request and returns the raw response; for
// tests of the target's handling of malformed messages.
func (c *Client) Call(ctx context.Context, raw []byte) (*remotepb.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.roundTripLocked(ctx, raw)
}

func (c *Client) call(ctx context.Context, req *remotepb.Request) (*remotepb.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	req.Id = c.next
	raw, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := c.roundTripLocked(ctx, raw)
	if err != nil {
		return nil, err
	}
	if resp.Id != req.Id {
		return nil, fmt.Errorf("%w: response %d to request %d", ErrMalformed, resp.Id, req.Id)
	}
	if e := resp.Error; e != nil {
		return nil, codeErr(e)
	}
	return resp, nil
}

func (c *Client) roundTripLocked(ctx context.Context, raw []byte) (*remotepb.Response, error) {
	if len(raw) > c.max {
		return nil, fmt.Errorf("%w: request of %d bytes", rdma.ErrTooLarge, len(raw))
	}
	b := c.buf.Bytes()
	r := c.conn.Recv(c.mr, c.max, MaxResponse) // posted before the request leaves
	copy(b, raw)
	if err := c.conn.Send(c.mr, 0, len(raw)).Wait(ctx); err != nil {
		return nil, err
	}
	if err := r.Wait(ctx); err != nil {
		return nil, err
	}
	var resp remotepb.Response
	if err := proto.Unmarshal(b[c.max:c.max+r.Len()], &resp); err != nil {
		return nil, fmt.Errorf("%w: response: %v", ErrMalformed, err)
	}
	return &resp, nil
}

func codeErr(e *remotepb.Error) error {
	var s error
	switch e.Code {
	case remotepb.Code_CODE_MALFORMED:
		s = ErrMalformed
	case remotepb.Code_CODE_STALE_EPOCH:
		s = ErrStaleEpoch
	case remotepb.Code_CODE_NOT_WRITER:
		s = ErrNotWriter
	case remotepb.Code_CODE_NO_REGION:
		s = ErrNoRegion
	case remotepb.Code_CODE_NO_STREAM:
		s = ErrNoStream
	case remotepb.Code_CODE_MISMATCH:
		s = ErrMismatch
	default:
		s = ErrTarget
	}
	return fmt.Errorf("%w: %s", s, e.Message)
}
