package mover

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/rpstream/rpstream/pmem"
)

func TestParseEngine(t *testing.T) {
	for in, want := range map[string]Engine{"sync": EngineSync, " CPU ": EngineCPU, "dsa": EngineDSA, "Auto": EngineAuto} {
		got, err := ParseEngine(in)
		if err != nil || got != want {
			t.Errorf("ParseEngine(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "gpu", "sync,cpu", "\x00"} {
		if _, err := ParseEngine(in); !errors.Is(err, ErrUnknownEngine) {
			t.Errorf("ParseEngine(%q): %v", in, err)
		}
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var e Engine
	fs.Var(&e, "mover", EngineUsage)
	if err := fs.Parse([]string{"--mover", "cpu"}); err != nil || e != EngineCPU {
		t.Fatalf("flag: %q %v", e, err)
	}
	fs.SetOutput(new(strings.Builder))
	if err := fs.Parse([]string{"--mover", "fast"}); err == nil {
		t.Fatal("bad flag value accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Workers: -1},
		{QueueDepth: -5},
		{Engine: "turbo"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	d := DefaultConfig()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestEngineSelection(t *testing.T) {
	t.Setenv(EnvVar, "sync")
	m, err := New(Config{})
	if err != nil || m.Name() != "sync" || !strings.Contains(m.Describe(), EnvVar) {
		t.Fatalf("env sync: %v %v", m, err)
	}
	m.Close()
	m, err = New(Config{Engine: EngineCPU, InlineBelow: 1000})
	if err != nil || m.Name() != "cpu" || !strings.Contains(m.Describe(), "Config.Engine") {
		t.Fatalf("config wins over env: %v", err)
	}
	m.Close()
	t.Setenv(EnvVar, "bogus")
	if _, err := New(Config{}); !errors.Is(err, ErrUnknownEngine) {
		t.Fatalf("bad env: %v", err)
	}
	t.Setenv(EnvVar, "")
	dir := t.TempDir() // no DSA devices here
	cfg := Config{Engine: EngineAuto, InlineBelow: 1000}
	cfg.DSA.SysfsRoot, cfg.DSA.DevRoot = dir+"/sys", dir+"/dev"
	m, err = New(cfg)
	if err != nil || m.Name() != "cpu" || !strings.Contains(m.Describe(), "auto") {
		t.Fatalf("auto without device: %v %v", m, err)
	}
	t.Log(m.Describe())
	m.Close()
	cfg.Engine = EngineDSA
	_, err = New(cfg)
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("dsa without device: %v", err)
	}
	t.Log(err)
}

func TestFlagsFor(t *testing.T) {
	for m, want := range map[pmem.Mode]Flags{pmem.PersistFlush: Durable, pmem.PersistFence: Durable, pmem.PersistMsync: NoFlush} {
		f, after := FlagsFor(m)
		if f != want || after != (m == pmem.PersistMsync) {
			t.Errorf("%v: %v %v", m, f, after)
		}
	}
}
