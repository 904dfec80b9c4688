package pki_test

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/rpstream/rpstream/pki"
)

// serve accepts TLS connections with cfg on loopback until the test
// ends; each handshake's error goes to errs.
func serve(t *testing.T, cfg *tls.Config) (string, chan error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	errs := make(chan error, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			err = c.(*tls.Conn).Handshake()
			select {
			case errs <- err:
			default:
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), errs
}

func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.ConnectionState(), nil
}

func TestPeerMutualAndReload(t *testing.T) {
	ca, err := pki.NewCA("ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fa, err := ca.WriteFiles(dir, pki.Request{Name: "a", Node: true, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a, err := pki.Load(fa)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := ca.WriteFiles(t.TempDir(), pki.Request{Name: "b", Node: true, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b, err := pki.Load(fb)
	if err != nil {
		t.Fatal(err)
	}
	addr, errs := serve(t, a.PeerConfig())
	cs, err := dial(addr, b.PeerConfig())
	if err != nil {
		t.Fatalf("node to node: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("node to node, accepting side: %v", err)
	}
	if cs.Version != tls.VersionTLS13 {
		t.Fatalf("version %x, want TLS 1.3", cs.Version)
	}
	first := cs.PeerCertificates[0].SerialNumber

	// A client certificate of the same CA is no node's.
	fc, err := ca.WriteFiles(t.TempDir(), pki.Request{Name: "app", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := pki.ClientConfig(fc.CA, fc.Cert, fc.Key)
	if err != nil {
		t.Fatal(err)
	}
	cc.InsecureSkipVerify = true
	dial(addr, cc) // TLS 1.3: the client may learn of the refusal only on its first read
	if err := <-errs; err == nil {
		t.Fatal("a client certificate passed for a node's")
	}

	// Reissue a's certificate into the same files: Reload serves it.
	if _, err := ca.WriteFiles(dir, pki.Request{Name: "a", Node: true, Validity: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	cs, err = dial(addr, b.PeerConfig())
	if err != nil {
		t.Fatalf("after reload: %v", err)
	}
	<-errs
	if cs.PeerCertificates[0].SerialNumber.Cmp(first) == 0 {
		t.Fatal("the old certificate is still served after Reload")
	}

	// A broken file keeps the material in use.
	os.WriteFile(fa.Cert, []byte("garbage"), 0o644)
	if err := a.Reload(); !errors.Is(err, pki.ErrConfig) {
		t.Fatalf("reload of garbage: %v, want ErrConfig", err)
	}
	if _, err := dial(addr, b.PeerConfig()); err != nil {
		t.Fatalf("after a failed reload: %v", err)
	}
}

func TestPeerOtherCA(t *testing.T) {
	ca, _ := pki.NewCA("ca", time.Hour)
	other, _ := pki.NewCA("other", time.Hour)
	fa, _ := ca.WriteFiles(t.TempDir(), pki.Request{Name: "a", Node: true, Validity: time.Hour})
	fx, _ := other.WriteFiles(t.TempDir(), pki.Request{Name: "x", Node: true, Validity: time.Hour})
	a, err := pki.Load(fa)
	if err != nil {
		t.Fatal(err)
	}
	x, err := pki.Load(fx)
	if err != nil {
		t.Fatal(err)
	}
	addr, errs := serve(t, a.PeerConfig())
	if _, err := dial(addr, x.PeerConfig()); err == nil {
		t.Fatal("a node of another CA was accepted")
	}
	_, err = dial(addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil {
		// The server refuses a client without a certificate.
		if serr := <-errs; serr == nil {
			t.Fatal("a client without a certificate was accepted")
		}
	}
}

func TestLoadErrors(t *testing.T) {
	ca, _ := pki.NewCA("ca", time.Hour)
	other, _ := pki.NewCA("other", time.Hour)
	f, _ := other.WriteFiles(t.TempDir(), pki.Request{Name: "a", Node: true, Validity: time.Hour})
	f.CA = t.TempDir() + "/ca.crt"
	os.WriteFile(f.CA, ca.CertPEM, 0o644)
	if _, err := pki.Load(f); !errors.Is(err, pki.ErrConfig) {
		t.Fatalf("certificate of another CA: %v, want ErrConfig", err)
	}
	if _, err := pki.Load(pki.Files{CA: f.CA}); !errors.Is(err, pki.ErrConfig) {
		t.Fatalf("missing files: %v, want ErrConfig", err)
	}
	if err := pki.WriteDevSet(pki.DevSet{Dir: t.TempDir(), Nodes: []string{"../x"}}); !errors.Is(err, pki.ErrConfig) {
		t.Fatalf("bad name: %v, want ErrConfig", err)
	}
}
