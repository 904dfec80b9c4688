package proccluster

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOwnFlag(t *testing.T) {
	for _, a := range []string{"--data", "-data", "--name=x", "--client-addr", "--log-format", "--join", "--tls-key=k"} {
		if !OwnFlag(a) {
			t.Errorf("OwnFlag(%q) = false", a)
		}
	}
	for _, a := range []string{"--rdma", "verbs", "data", "--voters", "--catalog-timing=default", "--region-size", "--database"} {
		if OwnFlag(a) {
			t.Errorf("OwnFlag(%q) = true", a)
		}
	}
}

// TestRDMAProvider: the last "rdma provider" record of a member's log
// counts (a restart may choose again); lines that are not JSON records are
// skipped; a log without one says so.
func TestRDMAProvider(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "n1.log")
	c := &Cluster{members: []*member{{Node: Node{Name: "n1", Log: log}}}}
	if _, _, err := c.RDMAProvider(0); err == nil {
		t.Fatal("no log: no error")
	}
	if _, _, err := c.RDMAProvider(1); !errors.Is(err, ErrIndex) {
		t.Fatalf("member 1 of 1: %v", err)
	}
	body := "# proccluster: starting n1 at T: streamnode --rdma tcp\n" +
		`{"time":"t","level":"INFO","msg":"starting","node":"n1"}` + "\n"
	if err := os.WriteFile(log, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.RDMAProvider(0); !errors.Is(err, ErrNoProvider) {
		t.Fatalf("no record: %v", err)
	}
	body += `{"time":"t","level":"INFO","msg":"rdma provider","node":"n1","provider":"tcp","why":"--rdma tcp"}` + "\n" +
		"panic: not JSON {\n" +
		"# proccluster: starting n1 at T: streamnode --rdma verbs\n" +
		`{"time":"t","level":"INFO","msg":"rdma provider","node":"n1","provider":"verbs","why":"--rdma verbs"}` + "\n"
	if err := os.WriteFile(log, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	p, why, err := c.RDMAProvider(0)
	if err != nil || p != "verbs" || why != "--rdma verbs" {
		t.Fatalf("got %q %q %v, want the last record: verbs, --rdma verbs", p, why, err)
	}
}
