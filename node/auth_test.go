package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/acl"
	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/testutil"
	"github.com/rpstream/rpstream/pki"
)

// secureNode is a single node serving TLS, with an ACL, and the files
// clients need to reach it.
type secureNode struct {
	addr  string
	dir   string // certificates: ca.crt, NAME.crt, NAME.key
	other string // a client certificate of another CA: other/intruder.*
	log   *testutil.Buffer
}

const testACL = `{
	"tokens": [{"identity": "tok-reader", "sha256": "%s"}],
	"grants": [
		{"identity": "reader", "streams": ["s*"], "permissions": ["read"]},
		{"identity": "tok-reader", "streams": ["s*"], "permissions": ["read"]},
		{"identity": "appender", "streams": ["s*"], "permissions": ["append"]},
		{"identity": "admin", "streams": ["*"], "permissions": ["admin"]}
	]}`

func startSecureNode(t *testing.T) *secureNode {
	t.Helper()
	n := &secureNode{dir: t.TempDir(), other: t.TempDir(), log: &testutil.Buffer{}}
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.WriteFiles(n.dir, pki.Request{Name: "n1", Node: true, Hosts: []string{"127.0.0.1"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"reader", "appender", "admin", "nobody"} {
		if _, err := ca.WriteFiles(n.dir, pki.Request{Name: c, Validity: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	other, err := pki.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.WriteFiles(n.other, pki.Request{Name: "intruder", Validity: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.dir, "reader.token"), []byte("let me read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := pki.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := acl.Parse(fmt.Appendf(nil, testACL, acl.HashToken("let me read")))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(t.TempDir())
	cfg.RegionSize = 64 << 10
	cfg.MaxStreamSize = 64 << 20
	cfg.Logger = slog.New(slog.NewTextHandler(n.log, nil))
	cfg.TLS = keys.ServerConfig()
	cfg.ACL = func() *acl.ACL { return rules }
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = lis.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return n
}

// as is a client of n with identity id: a certificate of that name, the
// token "token", no credentials "" (TLS only) or "plaintext".
func (n *secureNode) as(t *testing.T, id string) *client.Client {
	t.Helper()
	o := client.Options{MaxAttempts: 1, Timeout: 3 * time.Second, TLSCAFile: filepath.Join(n.dir, "ca.crt")}
	switch id {
	case "plaintext":
		o.TLSCAFile = ""
	case "token":
		o.TokenFile = filepath.Join(n.dir, "reader.token")
	case "intruder", "intruder-forced":
		o.TLSCertFile, o.TLSKeyFile = filepath.Join(n.other, "intruder.crt"), filepath.Join(n.other, "intruder.key")
		if id == "intruder-forced" {
			// Go's client sends no certificate the node's CA list does not
			// match; another client may send it anyway.
			cfg, err := pki.ClientConfig(o.TLSCAFile, o.TLSCertFile, o.TLSKeyFile)
			if err != nil {
				t.Fatal(err)
			}
			cert := cfg.Certificates[0]
			cfg.Certificates = nil
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
			o.TLS = cfg
		}
	case "":
	default:
		o.TLSCertFile, o.TLSKeyFile = filepath.Join(n.dir, id+".crt"), filepath.Join(n.dir, id+".key")
	}
	c, err := client.Dial(n.addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestAuthPermissions checks each permission both ways: the identity
// granted it succeeds, another identity gets PermissionDenied, a caller
// without credentials Unauthenticated.
func TestAuthPermissions(t *testing.T) {
	n := startSecureNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.as(t, "admin").Create(ctx, "s1", client.CreateOptions{}); err != nil {
		t.Fatalf("admin creates s1: %v", err)
	}
	if _, err := n.as(t, "appender").Append(ctx, "s1", []byte("first")); err != nil {
		t.Fatalf("appender appends to s1: %v", err)
	}
	ops := []struct {
		name    string
		allowed []string // identities that may
		denied  []string // authenticated identities that may not
		do      func(c *client.Client) error
	}{
		{"create", []string{"admin"}, []string{"reader", "appender"}, func(c *client.Client) error {
			_, err := c.Create(ctx, fmt.Sprintf("s-%d", time.Now().UnixNano()), client.CreateOptions{})
			return err
		}},
		{"append", []string{"appender"}, []string{"reader", "token", "admin"}, func(c *client.Client) error {
			_, err := c.Append(ctx, "s1", []byte("x"))
			return err
		}},
		{"append stream", []string{"appender"}, []string{"reader", "admin"}, func(c *client.Client) error {
			a := c.NewAppender(ctx, "s1")
			defer a.Close()
			p, err := a.Append([]byte("y"))
			if err != nil {
				return err
			}
			_, err = p.Wait(ctx)
			return err
		}},
		{"read", []string{"reader", "token"}, []string{"appender", "admin"}, func(c *client.Client) error {
			_, _, err := c.Read(ctx, "s1", 0, 10)
			return err
		}},
		{"tail", []string{"reader"}, []string{"appender"}, func(c *client.Client) error {
			for _, err := range c.Tail(ctx, "s1", 0) {
				return err // the first entry, or the refusal
			}
			return nil
		}},
		{"status", []string{"reader"}, []string{"appender"}, func(c *client.Client) error {
			_, err := c.Status(ctx, "s1")
			return err
		}},
		{"delete", []string{"admin"}, []string{"reader", "appender"}, func(c *client.Client) error {
			name := fmt.Sprintf("s-del-%d", time.Now().UnixNano())
			if _, err := n.as(t, "admin").Create(ctx, name, client.CreateOptions{}); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			return c.Delete(ctx, name)
		}},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			for _, id := range op.allowed {
				if err := op.do(n.as(t, id)); err != nil {
					t.Errorf("%s: %v, want success", id, err)
				}
			}
			for _, id := range op.denied {
				if err := op.do(n.as(t, id)); status.Code(err) != codes.PermissionDenied {
					t.Errorf("%s: %v, want PermissionDenied", id, err)
				}
			}
			if err := op.do(n.as(t, "")); status.Code(err) != codes.Unauthenticated {
				t.Errorf("no credentials: %v, want Unauthenticated", err)
			}
		})
	}
	// The list shows only the streams one has a permission on.
	if _, err := n.as(t, "admin").Create(ctx, "hidden", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	names, err := n.as(t, "reader").List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range names {
		if !strings.HasPrefix(s, "s") {
			t.Fatalf("reader lists %q: %v", s, names)
		}
	}
	if !strings.Contains(n.log.String(), "call refused") {
		t.Fatalf("refusals not logged: %s", n.log.String())
	}
}

// TestTLSRefusesPlaintextAndStrangers: a plaintext client and a client
// whose certificate another CA issued get nothing, and the node logs why.
func TestTLSRefusesPlaintextAndStrangers(t *testing.T) {
	n := startSecureNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range []string{"plaintext", "intruder", "intruder-forced"} {
		_, err := n.as(t, id).Members(ctx)
		if err == nil {
			t.Fatalf("%s: answered", id)
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.Unauthenticated {
			t.Fatalf("%s: %v, want Unavailable (no connection) or Unauthenticated", id, err)
		}
		t.Logf("%s refused: %v", id, err)
	}
	if !strings.Contains(n.log.String(), "TLS handshake refused") {
		t.Fatalf("refused handshakes not logged: %s", n.log.String())
	}
	// A bearer token over plaintext is refused before it leaves.
	if _, err := client.Dial(n.addr, client.Options{Token: "let me read"}); err == nil {
		t.Fatal("a token without TLS was accepted by Dial")
	}
}

// TestHealthAndProbeWithoutCredentials: under TLS and an ACL, the
// grpc.health.v1 service and reflection answer a caller with no
// credentials (the interceptors check only the Streams service), the
// Streams service on the same connection refuses it, and client.Probe
// tells the node apart when it speaks TLS and not when it does not.
func TestHealthAndProbeWithoutCredentials(t *testing.T) {
	n := startSecureNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg, err := pki.ClientConfig(filepath.Join(n.dir, "ca.crt"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: api.Streams_ServiceDesc.ServiceName})
		if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if c := status.Code(err); c == codes.Unauthenticated || c == codes.PermissionDenied {
			t.Fatalf("health check refused: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("health check: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rc, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rc.Recv()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	if len(rr.GetListServicesResponse().GetService()) == 0 {
		t.Fatalf("reflection lists no service: %v", rr)
	}
	rc.CloseSend()
	if _, err := api.NewStreamsClient(conn).Members(ctx, &api.MembersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Members without credentials: %v, want Unauthenticated", err)
	}

	if err := client.Probe(ctx, n.addr, cfg); err != nil {
		t.Fatalf("Probe over TLS: %v", err)
	}
	if err := client.Probe(ctx, n.addr, nil); !errors.Is(err, client.ErrNotRPStream) {
		t.Fatalf("plaintext Probe of a TLS node: %v, want ErrNotRPStream", err)
	}
}
