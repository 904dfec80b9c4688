package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
)

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":      "127.0.0.1:7420",
		"127.0.0.1:9000": "127.0.0.1:9000",
		" node1 ":        "node1:7420",
		"node1:0":        "node1:0",
		"::1":            "[::1]:7420",
		"[::1]":          "[::1]:7420",
		"[::1]:9":        "[::1]:9",
		"":               "",
		"a:b:c":          "a:b:c", // not a host: left for gRPC to refuse
	} {
		if got := WithDefaultPort(in); got != want {
			t.Errorf("WithDefaultPort(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDialDefaultPort: an address without a port is dialled on
// DefaultPort (it was :443, gRPC's default, before).
func TestDialDefaultPort(t *testing.T) {
	c, err := Dial("127.0.0.1,127.0.0.2:9", Options{Seeds: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := strings.Join(c.Seeds(), ",")
	if want := "127.0.0.1:7420,127.0.0.2:9,localhost:7420"; got != want {
		t.Fatalf("seeds %s, want %s", got, want)
	}
}

// listen is a loopback listener closed at the end of the test; serve, if
// not nil, handles each connection.
func listen(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return lis.Addr().String()
}

func TestProbe(t *testing.T) {
	// A gRPC server (the node's transport) answers.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	go srv.Serve(lis)
	defer srv.Stop()

	// A port nothing listens on.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	garbage := listen(t, func(c net.Conn) { c.Write([]byte("\x00\xffgarbage garbage garbage\n")) })
	hangup := listen(t, func(c net.Conn) {})
	silent := listen(t, func(c net.Conn) { time.Sleep(2 * time.Second) })
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello")) }))
	defer web.Close()
	webAddr := strings.TrimPrefix(web.URL, "http://")

	for _, tc := range []struct {
		name, addr string
		timeout    time.Duration
		want       error
		words      string
	}{
		{"grpc", lis.Addr().String(), time.Second, nil, ""},
		{"refused", refused, time.Second, ErrNoNode, "no rpstream node at " + refused + ": connection refused"},
		{"garbage", garbage, time.Second, ErrNotRPStream, garbage + " does not speak the rpstream protocol"},
		{"http1", webAddr, time.Second, ErrNotRPStream, webAddr + " does not speak the rpstream protocol: it answered as an HTTP/1 server"},
		{"hangup", hangup, time.Second, ErrNotRPStream, "closed the connection without answering"},
		{"silent", silent, 300 * time.Millisecond, ErrNoAnswer, "no answer from " + silent},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
		start := time.Now()
		err := Probe(ctx, tc.addr, nil)
		cancel()
		if took := time.Since(start); took > tc.timeout+500*time.Millisecond {
			t.Errorf("%s: Probe took %v", tc.name, took)
		}
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.words) {
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.want, tc.words)
		}
	}
}

// TestProbeTLS: with a TLS configuration the probe speaks TLS first; an
// HTTP/2 server behind TLS answers, the same server probed in plaintext
// does not.
func TestProbeTLS(t *testing.T) {
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	web.EnableHTTP2 = true
	web.StartTLS()
	defer web.Close()
	addr := strings.TrimPrefix(web.URL, "https://")
	cfg := web.Client().Transport.(*http.Transport).TLSClientConfig
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := Probe(ctx, addr, cfg); err != nil {
		t.Fatalf("TLS: %v", err)
	}
	if err := Probe(ctx, addr, nil); !errors.Is(err, ErrNotRPStream) {
		t.Fatalf("plaintext to a TLS server: %v", err)
	}
}

// TestProbeTLSRefused: a TLS server that wants a client certificate
// finishes the TLS 1.3 handshake and then refuses a client without one;
// the probe says so (it said "closed the connection without answering").
func TestProbeTLSRefused(t *testing.T) {
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	web.EnableHTTP2 = true
	web.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13}
	web.StartTLS()
	defer web.Close()
	addr := strings.TrimPrefix(web.URL, "https://")
	cfg := web.Client().Transport.(*http.Transport).TLSClientConfig
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := Probe(ctx, addr, cfg)
	if !errors.Is(err, ErrTLSRefused) || !strings.Contains(err.Error(), addr+" refused the TLS connection") {
		t.Fatalf("Probe without the client certificate wanted: %v, want ErrTLSRefused", err)
	}
	t.Log(err)
}
