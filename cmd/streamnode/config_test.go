package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestNoFlagsGivesDefaults(t *testing.T) {
	var usage bytes.Buffer
	cfg, err := loadConfig(nil, env(nil), &usage)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Fatalf("got %+v, want the defaults", cfg)
	}
	if cfg.Data != "rpstream-node" || cfg.ClientAddr != "127.0.0.1:7420" || cfg.Role != "node" {
		t.Fatalf("defaults changed: %+v", cfg)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node.json")
	os.WriteFile(file, []byte(`{"name":"fromfile","data":"/d/file","client_addr":"127.0.0.1:1","role":"backup","drain_timeout":"3s","join":["a:1"]}`), 0o644)
	var usage bytes.Buffer
	cfg, err := loadConfig([]string{"--config", file, "--client-addr", "127.0.0.1:3", "--join", "b:2, c:3"},
		env(map[string]string{"RPSTREAM_DATA": "/d/env", "RPSTREAM_CLIENT_ADDR": "127.0.0.1:2"}), &usage)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Name, want.Data, want.ClientAddr, want.Role = "fromfile", "/d/env", "127.0.0.1:3", "backup"
	want.DrainTimeout = Duration(3 * time.Second)
	want.Join = []string{"b:2", "c:3"}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
	// RPSTREAM_CONFIG names the file too.
	if cfg, err := loadConfig(nil, env(map[string]string{"RPSTREAM_CONFIG": file}), &usage); err != nil || cfg.Name != "fromfile" {
		t.Fatalf("RPSTREAM_CONFIG: %+v %v", cfg, err)
	}
}

func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.json")
	os.WriteFile(unknown, []byte(`{"nmae":"typo"}`), 0o644)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--role", "leader"}, nil, "role"},
		{[]string{"--client-addr", "nope"}, nil, "client-addr"},
		{[]string{"--peer-addr", "127.0.0.1:99999"}, nil, "peer-addr"},
		{[]string{"--join", "x"}, nil, "join"},
		{[]string{"--name", "a b"}, nil, "name"},
		{[]string{"--data", ""}, nil, "data"},
		{[]string{"--gossip-addr", "127.0.0.1:7420"}, nil, "both"},
		{[]string{"--region-size", "5000"}, nil, "region-size"},
		{[]string{"--drain-timeout", "soon"}, nil, "drain-timeout"},
		{[]string{"--log-level", "loud"}, nil, "log-level"},
		{[]string{"--rdma", "infiniband"}, nil, "rdma"},
		{[]string{"--mover", "gpu"}, nil, "mover"},
		{[]string{"--secret", "long enough but on the command line"}, nil, "refused on the command line"},
		{nil, map[string]string{"RPSTREAM_SECRET": "short"}, "secret"},
		{[]string{"--secret-file", filepath.Join(dir, "missing")}, nil, "secret-file"},
		{[]string{"--tls-cert", "a.crt"}, nil, "go together"},
		{[]string{"--acl", "acl.json"}, nil, "needs TLS"},
		{nil, map[string]string{"RPSTREAM_RDMA": "x"}, "rdma"},
		{[]string{"--config", unknown}, nil, "nmae"},
		{[]string{"--config", filepath.Join(dir, "missing.json")}, nil, "config file"},
		{nil, map[string]string{"RPSTREAM_ROLE": "x"}, "role"},
		{[]string{"stray"}, nil, "unexpected argument"},
		{[]string{"--bogus"}, nil, "bogus"},
	} {
		var usage bytes.Buffer
		_, err := loadConfig(tc.args, env(tc.env), &usage)
		if err == nil || !strings.Contains(err.Error()+usage.String(), tc.want) {
			t.Errorf("%v %v: got %v, want an error about %s", tc.args, tc.env, err, tc.want)
		}
	}
}

// TestSharedValidation: streamnode reads sizes and checks names as
// streamcli does (package validate).
func TestSharedValidation(t *testing.T) {
	var usage bytes.Buffer
	cfg, err := loadConfig([]string{"--region-size", "4MiB"}, env(map[string]string{"RPSTREAM_NAME": "n1"}), &usage)
	if err != nil || cfg.RegionSize != 4<<20 {
		t.Fatalf("--region-size 4MiB: %d, %v", cfg.RegionSize, err)
	}
	if cfg, err := loadConfig(nil, env(map[string]string{"RPSTREAM_REGION_SIZE": "64k"}), &usage); err != nil || cfg.RegionSize != 64<<10 {
		t.Fatalf("RPSTREAM_REGION_SIZE=64k: %d, %v", cfg.RegionSize, err)
	}
	for _, bad := range [][]string{{"--name", ".hidden"}, {"--name", "-dash"}, {"--region-size", "3k"}, {"--region-size", "0"}, {"--voters", "n1,.x"}} {
		if _, err := loadConfig(bad, env(nil), &usage); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestUsage(t *testing.T) {
	var usage bytes.Buffer
	_, err := loadConfig([]string{"--help"}, env(nil), &usage)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"--client-addr VALUE", "(default 127.0.0.1:7420)", "(default 4MiB)", "(default rpstream-node)", "(env RPSTREAM_DATA)", "--version"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, usage.String())
		}
	}
	// An unknown flag: the error once (the caller prints it), a hint, no
	// usage.
	usage.Reset()
	_, err = loadConfig([]string{"--bogus"}, env(nil), &usage)
	if err == nil || !strings.Contains(err.Error(), "bogus") || strings.Contains(usage.String(), "bogus") || strings.Contains(usage.String(), "--client-addr") {
		t.Fatalf("--bogus: %v; usage %q", err, usage.String())
	}
	if _, err := loadConfig([]string{"--version"}, env(nil), &usage); !errors.Is(err, errVersion) {
		t.Fatalf("--version: %v", err)
	}
}
