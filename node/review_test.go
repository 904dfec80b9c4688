package node

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/client"
)

// TestCreateNameLedElsewhere: a stream name another member leads cannot
// be created again on a node that holds no copy of it (replicas 1: no
// member holds one), so that two leaders never serve streams of one name.
func TestCreateNameLedElsewhere(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	c1, err := client.Dial(nodes[0].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if _, err := c1.Create(ctx, "once", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c2, err := client.Dial(nodes[1].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, err = c2.Create(ctx, "once", client.CreateOptions{})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("create at n2 of a stream n1 leads: %v, want AlreadyExists", err)
	}
	// n2 holds nothing of it, and n1 still leads it.
	if names, err := nodes[1].srv.store.list(); err != nil || len(names) != 0 {
		t.Fatalf("n2's own streams: %v, %v", names, err)
	}
	if st, err := c2.Status(ctx, "once"); err != nil || st.Leader != "n1" {
		t.Fatalf("status: %v, %v", st, err)
	}
	// Once deleted, the name is free anywhere.
	if err := c1.Delete(ctx, "once"); err != nil {
		t.Fatal(err)
	}
	if st, err := c2.Create(ctx, "once", client.CreateOptions{}); err != nil || st.Leader != "n2" {
		t.Fatalf("create at n2 after the delete: %v, %v", st, err)
	}
}
