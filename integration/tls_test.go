package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
	"github.com/rpstream/rpstream/pki"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
)

// TestTLSCluster: three nodes with TLS on replicate a stream (the
// Control service and the rdma tcp connections inside mutual TLS); a
// plaintext client is refused; a node whose certificate another CA
// issued gossips with them (same secret) but cannot join the catalog,
// so no stream is placed on it, and both sides log why.
func TestTLSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin, err := proccluster.BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cl, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: dir, Nodes: 3, TLS: true,
		Args: []string{"--region-size", "262144"}, StopTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Close()
		if t.Failed() {
			for i := range cl.Len() {
				n := mustNode(cl, i)
				t.Logf("log of %s:\n%s", n.Name, proccluster.LogTail(n.Log, 30))
			}
		}
	})
	c := dial(t, strings.Join(cl.ClientAddrs(), ","), cl.ClientOptions())
	if _, err := c.Create(ctx, "secure", client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := c.Append(ctx, "secure", fmt.Appendf(nil, "entry %d", i)); err != nil {
			t.Fatalf("append %d (acks all: every copy written over TLS): %v", i, err)
		}
	}

	// A plaintext client gets nothing.
	plain := dial(t, cl.ClientAddrs()[0], client.Options{MaxAttempts: 1, Timeout: 2 * time.Second})
	if _, err := plain.Members(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext client: %v, want Unavailable (the handshake is refused)", err)
	}

	// The peer port (rdma tcp) takes no plaintext connection, even one
	// that knows the cluster secret (the built-in development one).
	{
		rc := rdma.LoopbackConfig("rpstream development secret, not for production")
		peer, err := tcp.Provider{}.NewPeer("", rc)
		if err != nil {
			t.Fatal(err)
		}
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := peer.Dial(dctx, mustNode(cl, 1).PeerAddr)
		dcancel()
		if err == nil {
			conn.Close()
			peer.Close()
			t.Fatal("a plaintext rdma connection with the right secret was accepted by a TLS node")
		}
		peer.Close()
		t.Logf("plaintext rdma refused: %v", err)
	}

	// An intruder: a node certificate from another CA, the cluster's
	// gossip secret (the built-in one), joining n1.
	other, err := pki.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsDir := t.TempDir()
	f, err := other.WriteFiles(tlsDir, pki.Request{Name: "n9", Node: true, Hosts: []string{"127.0.0.1"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ports, err := proccluster.FreePorts("127.0.0.1", 3)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "n9.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	n1 := mustNode(cl, 0)
	cmd := exec.Command(bin, "--name", "n9", "--data", filepath.Join(dir, "n9"), "--log-format", "json", "--catalog-timing", "loopback",
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--join", n1.GossipAddr,
		"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "RPSTREAM_CONFIG=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	// It is refused by the catalog: it logs its failed handshakes with
	// the certificate error, n1 logs refused handshakes, and the
	// catalog never lists it.
	deadline := time.Now().Add(20 * time.Second)
	var refused, logged bool
	for time.Now().Before(deadline) && !(refused && logged) {
		b, _ := os.ReadFile(logPath)
		refused = strings.Contains(string(b), "TLS handshake with a member failed") && strings.Contains(string(b), "certificate")
		b1, _ := os.ReadFile(n1.Log)
		logged = strings.Contains(string(b1), "TLS handshake refused")
		time.Sleep(200 * time.Millisecond)
	}
	if !refused {
		t.Fatalf("the intruder does not log its failed handshakes; its log:\n%s", proccluster.LogTail(logPath, 20))
	}
	if !logged {
		t.Fatalf("n1 does not log the refused handshake:\n%s", proccluster.LogTail(n1.Log, 20))
	}
	cs, err := c.API().ClusterStatus(ctx, &api.ClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cs.Nodes {
		if n.Name == "n9" {
			t.Fatalf("the intruder is in the catalog: %v", cs.Nodes)
		}
	}
	// Streams are placed on the three only, and still replicate.
	if _, err := c.Create(ctx, "secure2", client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "secure2", []byte("after the intruder")); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, "secure2")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmt.Sprint(st), "n9") {
		t.Fatalf("a copy on the intruder: %v", st)
	}
}
