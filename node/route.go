package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/cluster"
)

// Membership is what the Server needs of the cluster: who is in it and
// how to reach them. *cluster.Cluster satisfies it.
type Membership interface {
	Name() string
	Members() []cluster.Member
}

// localOnlyKey, set in a call's gRPC metadata, asks a node to answer from
// its own streams only, without asking other members: nodes set it when
// they ask each other, so that a lookup never loops.
const localOnlyKey = "rpstream-local-only"

// lookupTimeout bounds how long a node asks the others who leads a stream.
const lookupTimeout = 3 * time.Second

func localOnly(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(localOnlyKey)) > 0
}

// notLeader is the FailedPrecondition status that sends a client to
// stream's leader (api.NotLeader in its details).
func notLeader(stream string, leader *api.StreamStatusResponse) error {
	st := status.New(codes.FailedPrecondition, fmt.Sprintf("stream %s is led by %s at %s (epoch %d): ask there", stream, leader.Leader, leader.LeaderAddr, leader.Epoch))
	if d, err := st.WithDetails(&api.NotLeader{Leader: leader.Leader, LeaderAddr: leader.LeaderAddr, Epoch: leader.Epoch}); err == nil {
		st = d
	}
	return st.Err()
}

// route turns err, an error of opening stream here, into a leader hint
// when another member leads stream; otherwise it returns err's status.
func (s *Server) route(ctx context.Context, stream string, err error) error {
	if !errors.Is(err, ErrNoStream) || s.cluster() == nil || localOnly(ctx) {
		return statusOf(err)
	}
	if st, ferr := s.findLeader(ctx, stream); ferr == nil {
		return notLeader(stream, st)
	}
	return statusOf(err)
}

// peerStreams returns a client of member m's client service, dialled
// once and kept until Shutdown.
func (s *Server) peerStreams(addr string) (api.StreamsClient, error) {
	s.peerMu.Lock()
	defer s.peerMu.Unlock()
	if s.peers == nil {
		return nil, ErrClosing
	}
	if c := s.peers[addr]; c != nil {
		return api.NewStreamsClient(c), nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize)))
	if err != nil {
		return nil, err
	}
	s.peers[addr] = c
	return api.NewStreamsClient(c), nil
}

// otherNodes are the live stream nodes other than this one that have a
// client address, by name.
func (s *Server) otherNodes() []cluster.Member {
	var out []cluster.Member
	for _, m := range s.cluster().Members() {
		if m.Name == s.cfg.Name || !m.State.Live() || m.MetaErr != nil || m.ClientAddr == "" {
			continue
		}
		out = append(out, m)
	}
	return out
}

// askOthers calls f on every other live member at once (with the
// local-only flag) and returns their answers.
func askOthers[T any](ctx context.Context, s *Server, f func(ctx context.Context, c api.StreamsClient) (T, error)) []T {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, localOnlyKey, "1")
	var (
		mu  sync.Mutex
		out []T
		wg  sync.WaitGroup
	)
	for _, m := range s.otherNodes() {
		c, err := s.peerStreams(m.ClientAddr)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := f(ctx, c); err == nil {
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// findLeader asks the other members which of them leads stream.
func (s *Server) findLeader(ctx context.Context, stream string) (*api.StreamStatusResponse, error) {
	answers := askOthers(ctx, s, func(ctx context.Context, c api.StreamsClient) (*api.StreamStatusResponse, error) {
		return c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: stream})
	})
	var best *api.StreamStatusResponse
	for _, a := range answers {
		if best == nil || a.Epoch > best.Epoch {
			best = a
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoStream, stream)
	}
	return best, nil
}

// clusterStreams lists the streams led by the other members.
func (s *Server) clusterStreams(ctx context.Context) []string {
	answers := askOthers(ctx, s, func(ctx context.Context, c api.StreamsClient) ([]string, error) {
		r, err := c.ListStreams(ctx, &api.ListStreamsRequest{})
		if err != nil {
			return nil, err
		}
		return r.Streams, nil
	})
	var out []string
	for _, a := range answers {
		out = append(out, a...)
	}
	return out
}

// closePeers closes the connections to other members.
func (s *Server) closePeers() {
	s.peerMu.Lock()
	peers := s.peers
	s.peers = nil
	s.peerMu.Unlock()
	for _, c := range peers {
		c.Close()
	}
}

func memberState(st cluster.State) api.MemberState {
	switch st {
	case cluster.StateAlive:
		return api.MemberState_MEMBER_STATE_ALIVE
	case cluster.StateSuspect:
		return api.MemberState_MEMBER_STATE_SUSPECT
	case cluster.StateDead:
		return api.MemberState_MEMBER_STATE_DEAD
	case cluster.StateLeft:
		return api.MemberState_MEMBER_STATE_LEFT
	}
	return api.MemberState_MEMBER_STATE_UNSPECIFIED
}

func memberRole(r cluster.Role) api.Role {
	switch r {
	case cluster.RoleNode:
		return api.Role_ROLE_NODE
	case cluster.RoleBackup:
		return api.Role_ROLE_BACKUP
	}
	return api.Role_ROLE_UNSPECIFIED
}

// clusterMembers is the Members answer from the membership.
func (s *Server) clusterMembers() []*api.Member {
	var out []*api.Member
	for _, m := range s.cluster().Members() {
		out = append(out, &api.Member{
			Name: m.Name, ClientAddr: m.ClientAddr, PeerAddr: m.PeerAddr, GossipAddr: m.GossipAddr,
			Role: memberRole(m.Role), State: memberState(m.State), Capacity: m.Capacity, Self: m.Name == s.cfg.Name,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// errPlacement is the class of streams that cannot be placed on the live
// members (FailedPrecondition).
var errPlacement = errors.New("node: cannot place the stream's replicas")

// place chooses the members holding stream's other replicas (m.Replicas-1
// live stream nodes besides this one, by cluster.Place) and its backup
// copy (a live backup target if there is one), and records them in m.
func (s *Server) place(stream string, m *meta) error {
	members := s.cluster().Members()
	var others []cluster.Member
	for _, mb := range members {
		if mb.Name != s.cfg.Name {
			others = append(others, mb)
		}
	}
	cands := cluster.Candidates(others)
	m.Peers = map[string]string{}
	if m.Replicas > 1 {
		names, err := cluster.Place(stream, int(m.Replicas)-1, cands)
		if err != nil {
			return fmt.Errorf("%w: %d replicas need this node and %d other live stream nodes: %v", errPlacement, m.Replicas, m.Replicas-1, err)
		}
		m.Followers = names
	}
	m.Backup = cluster.PlaceBackup(stream, cands)
	for _, mb := range others {
		if slices.Contains(m.Followers, mb.Name) || mb.Name == m.Backup {
			if mb.PeerAddr == "" {
				return fmt.Errorf("%w: member %s advertises no peer address", errPlacement, mb.Name)
			}
			m.Peers[mb.Name] = mb.PeerAddr
		}
	}
	return nil
}

// deleteCopies asks the members holding copies of stream (stream id id)
// to delete them. A member that cannot be reached, or does not answer
// (hung), is asked again in the background (retryDeleteCopy); one that is
// down keeps its copy until it sees this node join (orphan.go).
func (s *Server) deleteCopies(ctx context.Context, stream string, id uint64, m meta) {
	// Not cut short by the end of the client's call; the retries in the
	// background end with the server (stopCtx).
	ctx = context.WithoutCancel(ctx)
	holders := append(slices.Clone(m.Followers), m.Backup)
	addrs := map[string]string{}
	for _, mb := range s.cluster().Members() {
		if mb.State.Live() && mb.ClientAddr != "" {
			addrs[mb.Name] = mb.ClientAddr
		}
	}
	for _, h := range holders {
		if h == "" {
			continue
		}
		addr, ok := addrs[h]
		if !ok {
			s.log.Warn("cannot delete a copy: member not live", "stream", stream, "member", h)
			continue
		}
		if err := s.deleteCopy(ctx, addr, stream, id); err != nil {
			s.log.Warn("cannot delete a copy; retrying in the background", "stream", stream, "member", h, "err", err)
			s.retryDeleteCopy(h, stream, id)
		}
	}
}

// copyOfKey names, in a local-only DeleteStream, the copy to delete:
// "LEADER/STREAMID" (hex), so that the holder deletes only the copy of
// that stream, never that of a stream made anew under the name.
const copyOfKey = "rpstream-copy-of"

// deleteCopy asks the member at addr to delete its copy of stream (id),
// within lookupTimeout. A copy already gone or of another stream is done.
func (s *Server) deleteCopy(ctx context.Context, addr, stream string, id uint64) error {
	c, err := s.peerStreams(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, localOnlyKey, "1", copyOfKey, fmt.Sprintf("%s/%x", s.cfg.Name, id))
	_, err = c.DeleteStream(ctx, &api.DeleteStreamRequest{Stream: stream})
	switch status.Code(err) {
	case codes.NotFound, codes.FailedPrecondition:
		return nil
	}
	return err
}

// retryDeleteCopy asks member again, with a growing pause (up to 10 s),
// until it deletes its copy of stream (id), says it has none, leaves the
// membership or this node stops: a member that was hung when the stream
// was deleted would otherwise serve the deleted stream from its copy.
func (s *Server) retryDeleteCopy(member, stream string, id uint64) {
	if s.enter() != nil {
		return
	}
	go func() {
		defer s.leave() // Shutdown ends stopCtx before it waits
		wait := 500 * time.Millisecond
		for {
			select {
			case <-s.stopCtx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 10*time.Second)
			addr := ""
			for _, mb := range s.cluster().Members() {
				if mb.Name == member && mb.ClientAddr != "" {
					if mb.State == cluster.StateLeft {
						return
					}
					if mb.State.Live() {
						addr = mb.ClientAddr
					}
				}
			}
			if addr == "" {
				continue // down: it sets its copy aside when back (orphan.go)
			}
			if err := s.deleteCopy(s.stopCtx, addr, stream, id); err == nil {
				s.log.Info("copy deleted after retries", "stream", stream, "member", member)
				return
			}
		}
	}()
}
