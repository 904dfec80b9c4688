package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/pki"
)

// servedSerial is the serial number of the certificate served at addr.
func servedSerial(t *testing.T, addr, caFile string) string {
	t.Helper()
	cfg, err := pki.ClientConfig(caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = []string{"h2"}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// TestProcessSIGHUPReloadsCertificate: a node with TLS serves a new
// certificate written over its files once it gets SIGHUP, and keeps
// serving the old one while the new files are unusable.
func TestProcessSIGHUPReloadsCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tdir := t.TempDir()
	f, err := ca.WriteFiles(tdir, pki.Request{Name: "n1", Node: true, Hosts: []string{"127.0.0.1"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, buildNode(t), t.TempDir(), "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA)
	waitLog(t, p, "registered in the catalog")
	first := servedSerial(t, p.addr, f.CA)

	c, err := client.Dial(p.addr, client.Options{MaxAttempts: 1, TLSCAFile: f.CA})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Members(ctx); err != nil {
		t.Fatalf("a TLS client: %v", err)
	}

	// Unusable files: SIGHUP keeps the certificate in use.
	good, _ := os.ReadFile(f.Cert)
	os.WriteFile(f.Cert, []byte("not a certificate"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "TLS files not reloaded")
	if got := servedSerial(t, p.addr, f.CA); got != first {
		t.Fatalf("serial %s after a failed reload, want %s", got, first)
	}
	os.WriteFile(f.Cert, good, 0o644)

	if _, err := ca.WriteFiles(tdir, pki.Request{Name: "n1", Node: true, Hosts: []string{"127.0.0.1"}, Validity: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, p.addr, f.CA); got != first {
		t.Fatalf("a new certificate is served before SIGHUP")
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "TLS files reloaded")
	if got := servedSerial(t, p.addr, f.CA); got == first {
		t.Fatalf("still serving %s after SIGHUP", got)
	}
	if _, err := c.Members(ctx); err != nil {
		t.Fatalf("after the reload: %v", err)
	}
	p.terminate(t)
}

// waitLog waits, at most 10 s, for the process to log msg.
func waitLog(t *testing.T, p *process, msg string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(p.logs(), msg) {
			return
		}
	}
	t.Fatalf("no %q in the log within 10s:\n%s", msg, p.logs())
}

func TestSecretFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(path, []byte("a secret of thirty-two bytes....\n"), 0o600)
	var usage bytes.Buffer
	cfg, err := loadConfig([]string{"--secret-file", path}, env(nil), &usage)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Secret != "a secret of thirty-two bytes...." {
		t.Fatalf("secret %q", cfg.Secret)
	}
	if _, err := loadConfig([]string{"--secret-file", path}, env(map[string]string{"RPSTREAM_SECRET": "another secret, long enough"}), &usage); err == nil {
		t.Fatal("both a secret file and RPSTREAM_SECRET accepted")
	}
}

func TestDevCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	var out, errb bytes.Buffer
	if code := devCA([]string{"--dir", dir, "--nodes", "n1,n2", "--clients", "admin"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, n := range []string{"n1", "n2"} {
		k, err := pki.Load(pki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, n+".crt"), Key: filepath.Join(dir, n+".key")})
		if err != nil {
			t.Fatal(err)
		}
		if name, ok := nodeURIName(k); !ok || name != n {
			t.Fatalf("%s: node name %q", n, name)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "ca.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v", st, err)
	}
	// More certificates later come from the same CA.
	ca1, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if code := devCA([]string{"--dir", dir, "--clients", "app"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	ca2, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if !bytes.Equal(ca1, ca2) {
		t.Fatal("the CA was replaced")
	}
	if code := devCA([]string{"--dir", dir}, &out, &errb); code != 2 {
		t.Fatalf("no names: exit %d, want 2", code)
	}
}
