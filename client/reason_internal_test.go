package client

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestReasonKeepsTheNodesAnswer: the reason an ErrTimeout gives is the
// newest failure, unless that is only a failure to reach some node while
// a node's own answer was seen before it.
func TestReasonKeepsTheNodesAnswer(t *testing.T) {
	answer := status.Error(codes.Unavailable, "node: quorum lost: entry 2 of q is stored here but not on enough copies for its policy yet")
	refused := status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)
	later := status.Error(codes.Unavailable, "stream q: its leader n1 (epoch 3) is down")
	for _, tc := range []struct {
		last, err, want error
	}{
		{nil, refused, refused},
		{nil, answer, answer},
		{answer, refused, answer},
		{refused, answer, answer},
		{answer, later, later},
		{refused, refused, refused},
	} {
		if got := reason(tc.last, tc.err); got != tc.want {
			t.Errorf("reason(%v, %v) = %v, want %v", tc.last, tc.err, got, tc.want)
		}
	}
}
