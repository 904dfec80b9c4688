package integration

import (
	"context"
	"testing"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

// TestSigtermLeaves: a member stopped with SIGTERM drains, exits 0 and
// leaves the cluster: the others list it as left, not dead (and a member
// SIGKILLed is listed as dead).
func TestSigtermLeaves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	c := dial(t, cl.ClientAddrs()[0], client.Options{})
	if err := cl.Stop(2); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if err := cl.Kill(1); err != nil {
		t.Fatal(err)
	}
	want := map[string]api.MemberState{"n1": api.MemberState_MEMBER_STATE_ALIVE, "n2": api.MemberState_MEMBER_STATE_DEAD, "n3": api.MemberState_MEMBER_STATE_LEFT}
	var got map[string]api.MemberState
	for ctx.Err() == nil {
		ms, err := c.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = map[string]api.MemberState{}
		for _, m := range ms {
			got[m.Name] = m.State
		}
		if len(got) == 3 && got["n1"] == want["n1"] && got["n2"] == want["n2"] && got["n3"] == want["n3"] {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("members as n1 sees them: %v, want %v", got, want)
}
