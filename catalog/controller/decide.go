package controller

import (
	"context"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/cluster"
)

// The controller's decisions. Whichever member is the Raft leader is the
// controller: it renews node leases (heartbeats), places new streams,
// refuses a name held by a live incarnation, adds registered nodes to the
// group as non-voting followers, and proposes each decision as one
// command. Every decision is checked again when the command is applied
// (package catalog), so a decision made on a stale view changes nothing.

// leaseTable is the controller's record of node heartbeats. It lives in
// the leader's memory only: a new controller gives every registered node
// a LeaseTTL from its election before counting it dead for placement
// and names, and half a LeaseTTL (two heartbeat periods: a live node
// learns of the new controller from Raft within ticks and heartbeats it
// within TTL/4) before replacing a stream's leader, so that a leader
// that died with the old controller is replaced soon; electing early is
// safe (epochs fence the old leader).
type leaseTable struct {
	mu    sync.Mutex
	since time.Time // when this member last became the controller
	seen  map[string]lease
	// heard is when a node, by name, was last heard of as the Raft
	// leader before this member became the controller, for a node whose
	// registration this member had not applied yet at its election (its
	// incarnation unknown then): live counts such a node from then, not
	// from the election, until it is seen.
	heard map[string]time.Time
}

type lease struct {
	incarnation uint64
	at          time.Time
}

func (t *leaseTable) init() { t.seen, t.heard = map[string]lease{}, map[string]time.Time{} }

func (t *leaseTable) becameLeader(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.since = now
	t.seen = map[string]lease{}
	t.heard = map[string]time.Time{}
}

// heardNamed records that name, whose incarnation is not known yet, was
// alive at at.
func (t *leaseTable) heardNamed(name string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.heard[name] = at
}

func (t *leaseTable) renew(name string, inc uint64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seen[name] = lease{inc, now}
}

// heardAt records that incarnation inc of name was last known alive at
// at, unless a later heartbeat says more.
func (t *leaseTable) heardAt(name string, inc uint64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l, ok := t.seen[name]; !ok || l.incarnation != inc || l.at.Before(at) {
		t.seen[name] = lease{inc, at}
	}
}

// live says whether incarnation inc of name holds a lease at now, and
// since when it was last heard of. A node not heard of since this member
// became the controller is live for grace from that moment.
func (t *leaseTable) live(name string, inc uint64, now time.Time, ttl, grace time.Duration) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l, ok := t.seen[name]; ok && l.incarnation == inc {
		return now.Sub(l.at) < ttl, now.Sub(l.at)
	} else if at, heard := t.heard[name]; heard && !ok {
		return now.Sub(at) < ttl, now.Sub(at)
	}
	return now.Sub(t.since) < grace, now.Sub(t.since)
}

// Handle decides req if this node is the controller, or passes it on to
// the controller once (req.Hops). It is the Control service's Forward.
func (c *Controller) Handle(ctx context.Context, req *pb.ControlRequest) (*pb.ControlResponse, error) {
	select {
	case <-c.stop:
		return nil, status.Error(codes.Unavailable, ErrStopped.Error())
	default:
	}
	if !c.IsController() {
		// The controller as this node knows it; else (a node not yet in
		// the group knows none) any other live member, which passes the
		// request on to the one it knows.
		target := c.ControllerName()
		if target == c.cfg.Name || target == "" {
			target = ""
			if req.Hops == 0 {
				target = c.anyOtherMember()
			}
		}
		if req.Hops >= maxHops || target == "" {
			return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_NO_CONTROLLER, Error: fmt.Sprintf("%s knows no controller (Raft leader) now", c.cfg.Name)}, nil
		}
		fwd := &pb.ControlRequest{Hops: req.Hops + 1, Req: req.Req}
		return c.cfg.Transport.Forward(ctx, target, fwd)
	}
	resp, err := c.decide(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.Controller = c.cfg.Name
	return resp, nil
}

// maxHops bounds how often a request is passed on: to any member, then to
// the controller that member knows.
const maxHops = 2

// anyOtherMember is a live member other than this node, chosen at random.
func (c *Controller) anyOtherMember() string {
	var names []string
	for _, m := range c.cfg.Members() {
		if m.Name != c.cfg.Name && m.State.Live() && m.ClientAddr != "" {
			names = append(names, m.Name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return names[mathrand.IntN(len(names))]
}

// decide runs on the controller.
func (c *Controller) decide(ctx context.Context, req *pb.ControlRequest) (*pb.ControlResponse, error) {
	now := time.Now()
	switch r := req.Req.(type) {
	case *pb.ControlRequest_Heartbeat:
		return c.heartbeat(ctx, r.Heartbeat, now), nil
	case *pb.ControlRequest_RegisterNode:
		return c.register(ctx, r.RegisterNode, now)
	case *pb.ControlRequest_CreateStream:
		return c.create(ctx, r.CreateStream, now)
	case *pb.ControlRequest_DeleteStream:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_DeleteStream{DeleteStream: r.DeleteStream}})
	case *pb.ControlRequest_GrantEpoch:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_GrantEpoch{GrantEpoch: r.GrantEpoch}})
	case *pb.ControlRequest_CopyDropped:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_CopyDropped{CopyDropped: r.CopyDropped}})
	case *pb.ControlRequest_ActivateStream:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_ActivateStream{ActivateStream: r.ActivateStream}})
	case *pb.ControlRequest_ForgetNode:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_ForgetNode{ForgetNode: r.ForgetNode}})
	case *pb.ControlRequest_ElectLeader:
		return c.handOff(ctx, r.ElectLeader, now)
	case *pb.ControlRequest_EpochStarted:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_EpochStarted{EpochStarted: r.EpochStarted}})
	case *pb.ControlRequest_SetRetention:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_SetRetention{SetRetention: r.SetRetention}})
	case *pb.ControlRequest_TrimStream:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_TrimStream{TrimStream: r.TrimStream}})
	case *pb.ControlRequest_AddConsumer:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_AddConsumer{AddConsumer: r.AddConsumer}})
	case *pb.ControlRequest_RemoveConsumer:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_RemoveConsumer{RemoveConsumer: r.RemoveConsumer}})
	case *pb.ControlRequest_AckConsumers:
		return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_AckConsumers{AckConsumers: r.AckConsumers}})
	case *pb.ControlRequest_RestoreStream:
		return c.restoreStream(ctx, r.RestoreStream, now)
	case *pb.ControlRequest_VoterChange:
		// A change of the group may take longer than one attempt of its
		// requester: it runs for RequestTimeout whatever the caller does.
		vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RequestTimeout)
		defer cancel()
		return c.voterChange(vctx, r.VoterChange)
	}
	return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_INVALID, Error: "controller: empty request"}, nil
}

// decideCommand proposes cmd and answers with what it did.
func (c *Controller) decideCommand(ctx context.Context, cmd *pb.Command) (*pb.ControlResponse, error) {
	a, err := c.propose(ctx, cmd)
	if err != nil {
		code := pb.ErrorCode_ERROR_CODE_INTERNAL
		// A proposal not applied in time was lost or is late (this member
		// lost its leadership, or its log is slow): the requester asks
		// again within its RequestTimeout, as for a lost answer.
		if errors.Is(err, ErrNoController) || errors.Is(err, ErrStopped) || errors.Is(err, ErrTimeout) {
			code = pb.ErrorCode_ERROR_CODE_NO_CONTROLLER
		}
		return &pb.ControlResponse{Code: code, Error: err.Error()}, nil
	}
	resp := &pb.ControlResponse{Index: a.index, Stream: a.res.Stream, Epoch: a.res.Epoch}
	if a.res.Err != nil {
		resp.Code, resp.Error = codeOf(a.res.Err), a.res.Err.Error()
	}
	return resp, nil
}

func (c *Controller) heartbeat(ctx context.Context, hb *pb.Heartbeat, now time.Time) *pb.ControlResponse {
	n, ok := c.Node(hb.Name)
	if !ok || n.Incarnation != hb.Incarnation {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_UNKNOWN_NODE, Error: fmt.Sprintf("controller: %s (incarnation %016x) is not registered", hb.Name, hb.Incarnation)}
	}
	c.leases.renew(hb.Name, hb.Incarnation, now)
	c.maybeAddFollower(hb.Name)
	return &pb.ControlResponse{}
}

// maybeAddFollower adds a registered node that is not in the Raft group
// as a non-voting follower, so that it follows the catalog.
func (c *Controller) maybeAddFollower(name string) {
	id := RaftID(name)
	c.mu.RLock()
	in := slices.Contains(c.conf.GetVoters(), id) || slices.Contains(c.conf.GetLearners(), id)
	c.mu.RUnlock()
	if in {
		return
	}
	cc := &raftpb.ConfChange{Type: raftpb.ConfChangeAddLearnerNode.Enum(), NodeId: &id, Context: []byte(name)}
	c.do(context.Background(), func() {
		if err := c.rn.ProposeConfChange(cc); err != nil {
			c.log.Debug("adding a follower to the controller group", "node", name, "err", err)
		}
	})
}

func (c *Controller) register(ctx context.Context, r *pb.RegisterNode, now time.Time) (*pb.ControlResponse, error) {
	if err := catalog.ValidName(r.Name); err != nil {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_INVALID, Error: "controller: node name " + err.Error()}, nil
	}
	reg := &pb.RegisterNode{Name: r.Name, Incarnation: r.Incarnation, Role: r.Role}
	if n, ok := c.Node(r.Name); ok && n.Incarnation != r.Incarnation {
		if live, ago := c.leases.live(r.Name, n.Incarnation, now, c.cfg.LeaseTTL, c.cfg.LeaseTTL); live {
			return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_NAME_TAKEN, Error: fmt.Sprintf(
				"the name %s is held by a live node (incarnation %016x, heard from %v ago); this process has incarnation %016x: give it another --name, or stop the other one first",
				r.Name, n.Incarnation, ago.Round(time.Millisecond), r.Incarnation)}, nil
		}
		reg.Replace = true
		c.log.Warn("a node name passes to a new incarnation (the old one's lease expired)", "node", r.Name, "old", fmt.Sprintf("%016x", n.Incarnation), "new", fmt.Sprintf("%016x", r.Incarnation))
		// The new incarnation has an empty Raft log: its place in the
		// group is made anew, so that the leader does not take it for the
		// member that held the lost log.
		if err := c.resetMember(ctx, r.Name); err != nil {
			return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_NO_CONTROLLER, Error: fmt.Sprintf("controller: resetting %s's place in the group: %v", r.Name, err)}, nil
		}
	}
	resp, err := c.decideCommand(ctx, &pb.Command{Op: &pb.Command_RegisterNode{RegisterNode: reg}})
	if err == nil && resp.Code == pb.ErrorCode_ERROR_CODE_NONE {
		c.leases.renew(r.Name, r.Incarnation, now)
		c.maybeAddFollower(r.Name)
	}
	return resp, err
}

// resetMember removes node name from the Raft group and adds it again in
// the same role (voter or follower), with no record of what its lost log
// held.
func (c *Controller) resetMember(ctx context.Context, name string) error {
	id := RaftID(name)
	c.mu.RLock()
	voter, learner := slices.Contains(c.conf.GetVoters(), id), slices.Contains(c.conf.GetLearners(), id)
	c.mu.RUnlock()
	if !voter && !learner {
		return nil
	}
	if err := c.changeConf(ctx, raftpb.ConfChangeRemoveNode, name, func(cs *raftpb.ConfState) bool {
		return !slices.Contains(cs.GetVoters(), id) && !slices.Contains(cs.GetLearners(), id)
	}); err != nil {
		return err
	}
	typ := raftpb.ConfChangeAddLearnerNode
	if voter {
		typ = raftpb.ConfChangeAddNode
	}
	c.log.Warn("a member that lost its Raft log is added to the group anew", "node", name, "voter", voter)
	return c.changeConf(ctx, typ, name, func(cs *raftpb.ConfState) bool {
		return slices.Contains(cs.GetVoters(), id) == voter && slices.Contains(cs.GetLearners(), id) == !voter
	})
}

// changeConf proposes one change of the group and waits until done(conf)
// holds here.
func (c *Controller) changeConf(ctx context.Context, typ raftpb.ConfChangeType, name string, done func(*raftpb.ConfState) bool) error {
	id := RaftID(name)
	cc := &raftpb.ConfChange{Type: typ.Enum(), NodeId: &id, Context: []byte(name)}
	perr := make(chan error, 1)
	if err := c.do(ctx, func() { perr <- c.rn.ProposeConfChange(cc) }); err != nil {
		return err
	}
	// The loop may stop before it runs the proposal.
	select {
	case err := <-perr:
		if err != nil {
			return err
		}
	case <-c.stop:
		return ErrStopped
	}
	for {
		c.mu.RLock()
		ok, ch := done(c.conf), c.appliedCh
		c.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%v of %s not applied in time (another change pending?): %w", typ, name, ctx.Err())
		case <-c.stop:
			return ErrStopped
		}
	}
}

// create places and creates a stream: the requester leads it if it is a
// live stream node, the other replicas go to live stream nodes by
// weighted rendezvous hashing (cluster.Place), and an extra copy to a
// live backup target if there is one.
func (c *Controller) create(ctx context.Context, r *pb.CreateStreamRequest, now time.Time) (*pb.ControlResponse, error) {
	if s, ok := c.Stream(r.Name); ok && s.State != pb.StreamState_STREAM_STATE_DELETED {
		// Index: the requester waits until its own catalog shows the
		// stream it is told exists.
		return &pb.ControlResponse{Index: s.Id, Code: pb.ErrorCode_ERROR_CODE_EXISTS, Error: fmt.Sprintf("%v: %s (id %d, %s)", catalog.ErrExists, r.Name, s.Id, catalog.StateName(s.State)), Stream: s}, nil
	}
	if r.Replicas == 0 || r.Replicas > 15 {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_INVALID, Error: fmt.Sprintf("controller: %d replicas: want 1 to 15", r.Replicas)}, nil
	}
	cands, incs := c.liveCandidates(now)
	var leader string
	var followers []string
	if i := slices.IndexFunc(cands, func(m cluster.Candidate) bool { return m.Name == r.Requester }); i >= 0 && cands[i].Role == cluster.RoleNode {
		leader = r.Requester
		others := slices.Delete(slices.Clone(cands), i, i+1)
		if r.Replicas > 1 {
			var err error
			if followers, err = cluster.Place(r.Name, int(r.Replicas)-1, others); err != nil {
				return placementError(r, cands, err), nil
			}
		}
	} else {
		placed, err := cluster.Place(r.Name, int(r.Replicas), cands)
		if err != nil {
			return placementError(r, cands, err), nil
		}
		leader, followers = placed[0], placed[1:]
	}
	cs := &pb.CreateStream{Name: r.Name, Replicas: r.Replicas, Acks: r.Acks, RegionSize: r.RegionSize, RequestId: r.RequestId, Retention: r.Retention}
	for _, n := range append([]string{leader}, followers...) {
		cs.Copies = append(cs.Copies, &pb.Copy{Node: n, Incarnation: incs[n]})
	}
	if b := cluster.PlaceBackup(r.Name, cands); b != "" {
		cs.Copies = append(cs.Copies, &pb.Copy{Node: b, Incarnation: incs[b], Backup: true})
	}
	return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_CreateStream{CreateStream: cs}})
}

func placementError(r *pb.CreateStreamRequest, cands []cluster.Candidate, err error) *pb.ControlResponse {
	var names []string
	for _, m := range cands {
		if m.Role == cluster.RoleNode {
			names = append(names, m.Name)
		}
	}
	return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_PLACEMENT, Error: fmt.Sprintf(
		"%v: %d replicas need %d live stream nodes; live: %v (%v)", ErrPlacement, r.Replicas, r.Replicas, names, err)}
}

// liveCandidates are the members placement may choose: live in
// memberlist (the hint), registered in the catalog with the role they
// advertise, and holding a lease (the decision); with their
// incarnations.
func (c *Controller) liveCandidates(now time.Time) ([]cluster.Candidate, map[string]uint64) {
	incs := map[string]uint64{}
	var out []cluster.Candidate
	for _, m := range cluster.Candidates(c.cfg.Members()) {
		n, ok := c.Node(m.Name)
		if !ok {
			continue
		}
		if want := roleOf(m.Role); want != n.Role {
			continue
		}
		if live, _ := c.leases.live(m.Name, n.Incarnation, now, c.cfg.LeaseTTL, c.cfg.LeaseTTL); !live {
			continue
		}
		incs[m.Name] = n.Incarnation
		out = append(out, m)
	}
	return out, incs
}

func roleOf(r cluster.Role) pb.Role {
	switch r {
	case cluster.RoleNode:
		return pb.Role_ROLE_NODE
	case cluster.RoleBackup:
		return pb.Role_ROLE_BACKUP
	}
	return pb.Role_ROLE_UNSPECIFIED
}

// voterChange promotes a follower to voter, or demotes a voter to a
// follower without a vote, and waits until the group has applied it.
func (c *Controller) voterChange(ctx context.Context, v *pb.VoterChange) (*pb.ControlResponse, error) {
	if err := catalog.ValidName(v.Name); err != nil {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_INVALID, Error: "controller: node name " + err.Error()}, nil
	}
	id := RaftID(v.Name)
	c.mu.RLock()
	voters, learners := slices.Clone(c.conf.GetVoters()), slices.Clone(c.conf.GetLearners())
	c.mu.RUnlock()
	typ := raftpb.ConfChangeAddNode
	state := func(msg string) (*pb.ControlResponse, error) {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_GROUP_STATE, Error: fmt.Sprintf("controller: %s %s", v.Name, msg)}, nil
	}
	switch {
	case v.Remove && !slices.Contains(voters, id):
		return state("is not a voter")
	case v.Remove && len(voters) == 1:
		return state("is the only voter")
	case v.Remove && id == c.id:
		// The controller demoting itself hands the group over first, so
		// that the others do not wait an election timeout for a leader;
		// the requester's retry reaches the new controller. It hands it
		// to a voter that answered recently and holds the most of the
		// log: one that is down would never take over.
		c.do(ctx, func() {
			var to, match uint64
			for o, pr := range c.rn.Status().Progress {
				if o != id && slices.Contains(voters, o) && pr.RecentActive && (to == 0 || pr.Match > match) {
					to, match = o, pr.Match
				}
			}
			if to != 0 {
				c.rn.TransferLeader(to)
			}
		})
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_NO_CONTROLLER, Error: fmt.Sprintf("controller: %s hands the group over before it is demoted", v.Name)}, nil
	case v.Remove:
		typ = raftpb.ConfChangeAddLearnerNode
	case slices.Contains(voters, id):
		return state("is a voter already")
	case !slices.Contains(learners, id):
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_UNKNOWN_NODE, Error: fmt.Sprintf("controller: %s is not a follower of the catalog (not registered, or not caught up yet)", v.Name)}, nil
	}
	err := c.changeConf(ctx, typ, v.Name, func(cs *raftpb.ConfState) bool {
		return slices.Contains(cs.GetVoters(), id) != v.Remove
	})
	switch {
	case err == nil:
		return &pb.ControlResponse{Index: c.Applied()}, nil
	case errors.Is(err, ErrStopped):
		return nil, err
	case errors.Is(err, context.DeadlineExceeded):
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_TIMEOUT, Error: fmt.Sprintf("controller: the change of %s was not applied within %v (another change pending?); it may still apply", v.Name, c.cfg.RequestTimeout)}, nil
	}
	return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_NO_CONTROLLER, Error: err.Error()}, nil
}

// codeOf is the wire class of a catalog error.
func codeOf(err error) pb.ErrorCode {
	switch {
	case errors.Is(err, catalog.ErrExists):
		return pb.ErrorCode_ERROR_CODE_EXISTS
	case errors.Is(err, catalog.ErrNoStream):
		return pb.ErrorCode_ERROR_CODE_NO_STREAM
	case errors.Is(err, catalog.ErrNameTaken):
		return pb.ErrorCode_ERROR_CODE_NAME_TAKEN
	case errors.Is(err, catalog.ErrNotLeader):
		return pb.ErrorCode_ERROR_CODE_NOT_LEADER
	case errors.Is(err, catalog.ErrUnknownNode):
		return pb.ErrorCode_ERROR_CODE_UNKNOWN_NODE
	case errors.Is(err, catalog.ErrInvalid):
		return pb.ErrorCode_ERROR_CODE_INVALID
	case errors.Is(err, catalog.ErrStale):
		return pb.ErrorCode_ERROR_CODE_STALE
	case errors.Is(err, catalog.ErrHeld):
		return pb.ErrorCode_ERROR_CODE_HELD
	case errors.Is(err, catalog.ErrNoConsumer):
		return pb.ErrorCode_ERROR_CODE_NO_CONSUMER
	case errors.Is(err, catalog.ErrConsumerExists):
		return pb.ErrorCode_ERROR_CODE_EXISTS
	case errors.Is(err, ErrPlacement):
		return pb.ErrorCode_ERROR_CODE_PLACEMENT
	case errors.Is(err, ErrNoController):
		return pb.ErrorCode_ERROR_CODE_NO_CONTROLLER
	case errors.Is(err, ErrTimeout):
		return pb.ErrorCode_ERROR_CODE_TIMEOUT
	case errors.Is(err, ErrGroupState):
		return pb.ErrorCode_ERROR_CODE_GROUP_STATE
	case errors.Is(err, ErrLeaderLive):
		return pb.ErrorCode_ERROR_CODE_LEADER_LIVE
	}
	return pb.ErrorCode_ERROR_CODE_INTERNAL
}

// errOf is the error a response's code stands for (nil for none),
// wrapping the package's sentinel of its class.
func errOf(resp *pb.ControlResponse) error {
	var base error
	switch resp.Code {
	case pb.ErrorCode_ERROR_CODE_NONE:
		return nil
	case pb.ErrorCode_ERROR_CODE_EXISTS:
		base = catalog.ErrExists
	case pb.ErrorCode_ERROR_CODE_NO_STREAM:
		base = catalog.ErrNoStream
	case pb.ErrorCode_ERROR_CODE_NAME_TAKEN:
		base = catalog.ErrNameTaken
	case pb.ErrorCode_ERROR_CODE_NOT_LEADER:
		base = catalog.ErrNotLeader
	case pb.ErrorCode_ERROR_CODE_UNKNOWN_NODE:
		base = catalog.ErrUnknownNode
	case pb.ErrorCode_ERROR_CODE_INVALID:
		base = catalog.ErrInvalid
	case pb.ErrorCode_ERROR_CODE_STALE:
		base = catalog.ErrStale
	case pb.ErrorCode_ERROR_CODE_HELD:
		base = catalog.ErrHeld
	case pb.ErrorCode_ERROR_CODE_NO_CONSUMER:
		base = catalog.ErrNoConsumer
	case pb.ErrorCode_ERROR_CODE_PLACEMENT:
		base = ErrPlacement
	case pb.ErrorCode_ERROR_CODE_NO_CONTROLLER:
		base = ErrNoController
	case pb.ErrorCode_ERROR_CODE_TIMEOUT:
		base = ErrTimeout
	case pb.ErrorCode_ERROR_CODE_GROUP_STATE:
		base = ErrGroupState
	case pb.ErrorCode_ERROR_CODE_LEADER_LIVE:
		base = ErrLeaderLive
	default:
		return fmt.Errorf("controller: %s", resp.Error)
	}
	return &codedError{base: base, msg: resp.Error}
}

// codedError is an error answered by the controller: its text as sent,
// and its class for errors.Is.
type codedError struct {
	base error
	msg  string
}

func (e *codedError) Error() string { return e.msg }
func (e *codedError) Unwrap() error { return e.base }
