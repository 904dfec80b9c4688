package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/client"
)

// adminAddr is the admin listener's address p logged ("serving admin").
func (p *process) adminAddr(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(p.logs()))
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving admin" {
				return rec.Addr
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no \"serving admin\" line\n%s", p.logs())
	return ""
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sample is the value of the unlabelled series name in a /metrics body.
func sample(t *testing.T, body, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// TestProcessAdminListener: streamnode --admin-addr serves /healthz,
// /readyz, /metrics (whose append counter moves while appends run) and,
// with --pprof, /debug/pprof/; streamnode probe answers by /readyz.
func TestProcessAdminListener(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := buildNode(t)
	p := startProcess(t, bin, t.TempDir(), "--admin-addr", "127.0.0.1:0", "--pprof")
	base := "http://" + p.adminAddr(t)
	if code, body := httpGet(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := httpGet(t, base+"/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %q after 30s\n%s", code, body, p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.Command(bin, "probe", base+"/readyz").CombinedOutput(); err != nil {
		t.Fatalf("streamnode probe of a ready node: %v\n%s", err, out)
	}
	if code, _ := httpGet(t, base+"/debug/pprof/"); code != 200 {
		t.Fatalf("/debug/pprof/ with --pprof: %d", code)
	}

	c, err := client.Dial(p.addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "m", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Appenders run while /metrics is scraped: the counter moves between
	// scrapes.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Append(ctx, "m", fmt.Appendf(nil, "%d-%d", g, i)); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	var seen []float64
	for range 5 {
		time.Sleep(100 * time.Millisecond)
		_, body := httpGet(t, base+"/metrics")
		seen = append(seen, sample(t, body, "rpstream_appends_total"))
		if !strings.Contains(body, "go_goroutines ") || !strings.Contains(body, "process_resident_memory_bytes ") {
			t.Fatal("/metrics lacks the Go runtime or process collectors")
		}
	}
	close(stop)
	wg.Wait()
	moved := 0
	for i := 1; i < len(seen); i++ {
		if seen[i] > seen[i-1] {
			moved++
		}
	}
	if moved < 3 {
		t.Fatalf("rpstream_appends_total across scrapes while appending: %v", seen)
	}
	p.terminate(t)
}

// TestProcessNotReadyWithoutController: a node whose catalog voters are
// not all there knows no controller: /readyz answers 503 and says so,
// /healthz 200, and streamnode probe exits 1.
func TestProcessNotReadyWithoutController(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	bin := buildNode(t)
	p := startProcess(t, bin, t.TempDir(), "--admin-addr", "127.0.0.1:0", "--voters", "n1,absent2,absent3", "--catalog-timing", "loopback")
	base := "http://" + p.adminAddr(t)
	if code, _ := httpGet(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	// Long enough for several election timeouts of the loopback timing.
	time.Sleep(time.Second)
	code, body := httpGet(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "controller") {
		t.Fatalf("/readyz without a controller: %d %q", code, body)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "probe", base+"/readyz")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("streamnode probe of a node not ready: %v\n%s", err, out.String())
	}
	if _, body := httpGet(t, base+"/metrics"); sample(t, body, "rpstream_ready") != 0 || sample(t, body, "rpstream_catalog_has_controller") != 0 {
		t.Fatalf("/metrics of a node not ready:\n%s", body)
	}
	// Killed by the cleanup (a node stopped before it registers exits 1).
}

// TestAdminFlags: the admin listener is off by default; --pprof is a
// flag without a value and needs --admin-addr; the admin address may not
// be another listener's.
func TestAdminFlags(t *testing.T) {
	var usage bytes.Buffer
	cfg, err := loadConfig(nil, env(nil), &usage)
	if err != nil || cfg.AdminAddr != "" || cfg.Pprof {
		t.Fatalf("defaults: admin %q pprof %v (%v), want off", cfg.AdminAddr, cfg.Pprof, err)
	}
	cfg, err = loadConfig([]string{"--admin-addr", "127.0.0.1:7423", "--pprof"}, env(nil), &usage)
	if err != nil || cfg.AdminAddr != "127.0.0.1:7423" || !cfg.Pprof {
		t.Fatalf("--admin-addr --pprof: %+v %v", cfg, err)
	}
	cfg, err = loadConfig(nil, env(map[string]string{"RPSTREAM_ADMIN_ADDR": "127.0.0.1:7423", "RPSTREAM_PPROF": "true"}), &usage)
	if err != nil || cfg.AdminAddr != "127.0.0.1:7423" || !cfg.Pprof {
		t.Fatalf("from the environment: %+v %v", cfg, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pprof"}, "needs --admin-addr"},
		{[]string{"--admin-addr", "7423"}, "admin-addr"},
		{[]string{"--admin-addr", "127.0.0.1:7420"}, "both"},
		{[]string{"--admin-addr", "127.0.0.1:7423", "--pprof=maybe"}, "pprof"},
	} {
		usage.Reset()
		_, err := loadConfig(tc.args, env(nil), &usage)
		if err == nil || !strings.Contains(err.Error()+usage.String(), tc.want) {
			t.Errorf("%v: got %v, want an error about %s", tc.args, err, tc.want)
		}
	}
}
