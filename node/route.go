package node

import (
	"context"
	"fmt"
	"sort"

	"google.golang.org/grpc/codes"
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

// notLeader is the FailedPrecondition status that sends a client to
// stream's leader (api.NotLeader in its details).
func notLeader(stream string, leader *api.StreamStatusResponse) error {
	st := status.New(codes.FailedPrecondition, fmt.Sprintf("stream %s is led by %s at %s (epoch %d): ask there", stream, leader.Leader, leader.LeaderAddr, leader.Epoch))
	if d, err := st.WithDetails(&api.NotLeader{Leader: leader.Leader, LeaderAddr: leader.LeaderAddr, Epoch: leader.Epoch}); err == nil {
		st = d
	}
	return st.Err()
}

// route turns err, an error of opening stream here, into what the client
// sees: with a catalog, a leader hint (or Unavailable naming the last
// known leader when it is down); otherwise err's status.
func (s *Server) route(ctx context.Context, stream string, err error) error {
	if s.cfg.Catalog == nil {
		return statusOf(err)
	}
	return s.routeCatalog(stream, err)
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
