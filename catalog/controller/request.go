package controller

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// What a node asks of the catalog. Each call goes to the controller
// (forwarded if this node is not it), waits until the command it commits
// is applied here too, so that this node's catalog shows it, and ends
// within Config.RequestTimeout (or ctx) with an error that says why.

// request sends req to the controller and waits for its command to apply
// here. An attempt that does not reach a controller, or whose answer is
// lost (the controller changed, or hangs), is made again with the same
// request until RequestTimeout: creates and deletes carry a request id,
// so that a retry of one that did commit finds it done rather than
// failing (AlreadyExists, NotFound).
func (c *Controller) request(ctx context.Context, req *pb.ControlRequest) (*pb.ControlResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	attempt := c.cfg.Tick * time.Duration(2*c.cfg.ElectionTicks)
	wait := c.cfg.Tick
	retried := false
	for {
		actx, acancel := context.WithTimeout(ctx, attempt)
		resp, err := c.Handle(actx, req)
		acancel()
		retry := false
		switch {
		case err != nil:
			code := status.Code(err)
			retry = code == codes.Unavailable || code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded)
		case resp.Code == pb.ErrorCode_ERROR_CODE_NO_CONTROLLER:
			retry, err = true, errOf(resp)
		}
		if !retry || ctx.Err() != nil {
			if err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("%w within %v: %v", ErrNoController, c.cfg.RequestTimeout, err)
				}
				return nil, fmt.Errorf("controller: %w", err)
			}
			if resp.Index > 0 {
				if werr := c.WaitApplied(ctx, resp.Index); werr != nil {
					return nil, werr
				}
			}
			if retried {
				if done := c.doneBefore(req, resp); done != nil {
					return done, nil
				}
			}
			return resp, errOf(resp)
		}
		retried = true
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		case <-c.stop:
			return nil, ErrStopped
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// doneBefore says whether resp, the answer to a retried request, failed
// only because an earlier attempt of the same request committed: then it
// returns that attempt's answer.
func (c *Controller) doneBefore(req *pb.ControlRequest, resp *pb.ControlResponse) *pb.ControlResponse {
	switch r := req.Req.(type) {
	case *pb.ControlRequest_CreateStream:
		if resp.Code != pb.ErrorCode_ERROR_CODE_EXISTS || len(r.CreateStream.RequestId) == 0 {
			return nil
		}
		if s := resp.Stream; s != nil && string(s.CreateRequest) == string(r.CreateStream.RequestId) {
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RequestTimeout)
			defer cancel()
			if c.WaitApplied(ctx, s.Id) == nil {
				return &pb.ControlResponse{Stream: s}
			}
		}
		if s, ok := c.Stream(r.CreateStream.Name); ok && string(s.CreateRequest) == string(r.CreateStream.RequestId) {
			return &pb.ControlResponse{Stream: s}
		}
	case *pb.ControlRequest_DeleteStream:
		if resp.Code != pb.ErrorCode_ERROR_CODE_NO_STREAM || len(r.DeleteStream.RequestId) == 0 {
			return nil
		}
		if s, ok := c.Stream(r.DeleteStream.Name); ok && string(s.DeleteRequest) == string(r.DeleteStream.RequestId) {
			return &pb.ControlResponse{Stream: s}
		}
	}
	return nil
}

func requestID() []byte {
	b := make([]byte, 16)
	rand.Read(b)
	return b
}

// Register records this node's name and incarnation in the catalog. It
// fails with an error wrapping catalog.ErrNameTaken when another live
// incarnation holds the name; a dead one (lease expired) is replaced.
func (c *Controller) Register(ctx context.Context) error {
	_, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_RegisterNode{RegisterNode: &pb.RegisterNode{
		Name: c.cfg.Name, Incarnation: c.cfg.Incarnation, Role: c.cfg.Role}}})
	if err == nil {
		c.registered.Store(true)
	}
	return err
}

// CreateStream asks the controller to place and create a stream; this
// node leads it if it is a live stream node. The stream is CREATING
// until its leader activates it.
func (c *Controller) CreateStream(ctx context.Context, req *pb.CreateStreamRequest) (*pb.Stream, error) {
	req.Requester = c.cfg.Name
	req.RequestId = requestID()
	resp, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_CreateStream{CreateStream: req}})
	if err != nil {
		return nil, err
	}
	return resp.Stream, nil
}

// ActivateStream records that the leader made the stream's files.
func (c *Controller) ActivateStream(ctx context.Context, name string, id uint64) error {
	_, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_ActivateStream{ActivateStream: &pb.ActivateStream{Name: name, StreamId: id}}})
	return err
}

// DeleteStream turns stream name (id; 0: whichever) into a tombstone.
func (c *Controller) DeleteStream(ctx context.Context, name string, id uint64) (*pb.Stream, error) {
	resp, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_DeleteStream{DeleteStream: &pb.DeleteStream{Name: name, StreamId: id, RequestId: requestID()}}})
	if err != nil {
		return nil, err
	}
	return resp.Stream, nil
}

// CopyDropped records that this node removed its copy of a deleted
// stream.
func (c *Controller) CopyDropped(ctx context.Context, name string, id uint64) error {
	_, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_CopyDropped{CopyDropped: &pb.CopyDropped{Name: name, StreamId: id, Node: c.cfg.Name}}})
	return err
}

// GrantEpoch takes the next epoch of stream name (id), which this node
// must lead under its registered incarnation.
func (c *Controller) GrantEpoch(ctx context.Context, name string, id uint64) (uint64, error) {
	resp, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_GrantEpoch{GrantEpoch: &pb.GrantEpoch{
		Name: name, StreamId: id, Leader: c.cfg.Name, Incarnation: c.cfg.Incarnation}}})
	if err != nil {
		return 0, err
	}
	return resp.Epoch, nil
}

// HandOff asks the controller to make node to (a live stream node holding
// a current copy) the leader of stream name (id) under the next epoch:
// this node leads it under epoch and found that to's copy holds more of
// the log than its own (a takeover chooses the log holding every
// acknowledged entry, and that log's holder leads). It returns the epoch
// granted to.
func (c *Controller) HandOff(ctx context.Context, name string, id, epoch uint64, to string) (uint64, error) {
	resp, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_ElectLeader{ElectLeader: &pb.ElectLeader{
		Name: name, StreamId: id, Leader: to, FromEpoch: epoch, Reason: "hand-off from " + c.cfg.Name}}})
	if err != nil {
		return 0, err
	}
	return resp.Epoch, nil
}

// EpochStarted records that this node, leading stream name (id) under
// epoch, committed the epoch's first entry (index-1): the stream's commit
// floor becomes index.
func (c *Controller) EpochStarted(ctx context.Context, name string, id, epoch, index uint64) error {
	_, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_EpochStarted{EpochStarted: &pb.EpochStarted{
		Name: name, StreamId: id, Epoch: epoch, Index: index}}})
	return err
}

// AddVoter promotes node name, a follower of the catalog, to a voter;
// RemoveVoter demotes a voter to a follower without a vote.
func (c *Controller) AddVoter(ctx context.Context, name string) error {
	_, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_VoterChange{VoterChange: &pb.VoterChange{Name: name}}})
	return err
}

func (c *Controller) RemoveVoter(ctx context.Context, name string) error {
	_, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_VoterChange{VoterChange: &pb.VoterChange{Name: name, Remove: true}}})
	return err
}

// ForgetNode removes a node that holds no copy from the catalog.
func (c *Controller) ForgetNode(ctx context.Context, name string) error {
	_, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_ForgetNode{ForgetNode: &pb.ForgetNode{Name: name}}})
	return err
}

// heartbeats renews this node's lease at the controller every LeaseTTL/4
// once it is registered, and logs a change of its state once.
func (c *Controller) heartbeats() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.LeaseTTL / 4)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if n, ok := c.Node(c.cfg.Name); (!ok || n.Incarnation != c.cfg.Incarnation) && !c.registered.Load() {
			continue // not registered (yet)
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.LeaseTTL/2)
		resp, err := c.Handle(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_Heartbeat{Heartbeat: &pb.Heartbeat{Name: c.cfg.Name, Incarnation: c.cfg.Incarnation}}})
		cancel()
		if err == nil {
			err = errOf(resp)
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != lastErr {
			if msg == "" {
				c.log.Info("lease at the controller renewed again")
			} else {
				c.log.Warn("cannot renew the lease at the controller", "err", msg)
			}
			lastErr = msg
		}
	}
}

// Status is what the controller group looks like from this node.
type Status struct {
	Name        string
	Incarnation uint64
	// Controller is the Raft leader's name ("" if none known), Term its
	// term; Commit and Applied are this node's log positions.
	Controller string
	Term       uint64
	Commit     uint64
	Applied    uint64
	// State is this member's Raft state: leader, follower, candidate,
	// pre-candidate; Voter says whether it votes.
	State string
	Voter bool
	// Voters and Followers (non-voting) are the group's members.
	Voters    []string
	Followers []string
}

// Status returns the group as this node sees it.
func (c *Controller) Status() Status {
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := Status{
		Name: c.cfg.Name, Incarnation: c.cfg.Incarnation, Term: c.term, Commit: max(c.commit, c.cat.Applied()), Applied: c.cat.Applied(),
		State: stateName(c.state), Voter: slices.Contains(c.conf.GetVoters(), c.id),
		Voters: c.namesLocked(c.conf.GetVoters()), Followers: c.namesLocked(c.conf.GetLearners()),
	}
	if c.lead != raft.None {
		st.Controller = c.nameLocked(c.lead)
	}
	return st
}

func stateName(s raft.StateType) string {
	switch s {
	case raft.StateLeader:
		return "leader"
	case raft.StateCandidate:
		return "candidate"
	case raft.StatePreCandidate:
		return "pre-candidate"
	}
	return "follower"
}

// LeaseLive says, on the controller, whether node name's current
// incarnation holds a lease; elsewhere ok is false.
func (c *Controller) LeaseLive(name string) (live, ok bool) {
	if !c.IsController() {
		return false, false
	}
	n, found := c.Node(name)
	if !found {
		return false, true
	}
	live, _ = c.leases.live(name, n.Incarnation, time.Now(), c.cfg.LeaseTTL, c.cfg.LeaseTTL)
	return live, true
}

// IsNoController reports whether err says no controller could be reached.
func IsNoController(err error) bool { return errors.Is(err, ErrNoController) }
