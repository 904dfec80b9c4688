package admin

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPaths(t *testing.T) {
	var why error = errors.New("draining")
	reg := NewRegistry()
	srv := httptest.NewServer(Handler(Config{Gatherer: reg, Ready: func() error { return why }, Pprof: true}))
	defer srv.Close()
	if code, body := get(t, srv.URL+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("/readyz not ready: %d %q", code, body)
	}
	why = nil
	if code, body := get(t, srv.URL+"/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz ready: %d %q", code, body)
	}
	if code, body := get(t, srv.URL+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines ") || !strings.Contains(body, "process_cpu_seconds_total ") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if code, _ := get(t, srv.URL+"/debug/pprof/goroutine?debug=1"); code != 200 {
		t.Fatalf("pprof: %d", code)
	}
	off := httptest.NewServer(Handler(Config{Gatherer: reg}))
	defer off.Close()
	if code, _ := get(t, off.URL+"/debug/pprof/"); code != 404 {
		t.Fatalf("pprof without Pprof: %d", code)
	}
	if code, _ := get(t, off.URL+"/readyz"); code != 200 {
		t.Fatalf("/readyz without a Ready func: %d", code)
	}
}
