package validate

import (
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	for _, ok := range []string{"a", "s1", "0", "my.stream_2-x", "A.b", strings.Repeat("n", MaxNameLen)} {
		if err := Name(ok); err != nil {
			t.Errorf("Name(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "-dash", "_x", "a/b", "../x", "a b", "é", "x\x00", strings.Repeat("n", MaxNameLen+1)} {
		if err := Name(bad); err == nil {
			t.Errorf("Name(%q) accepted", bad)
		}
	}
}

func TestReplicas(t *testing.T) {
	for _, ok := range []int{1, 3, MaxReplicas} {
		if err := Replicas(ok); err != nil {
			t.Errorf("Replicas(%d): %v", ok, err)
		}
	}
	for _, bad := range []int{-1, 0, MaxReplicas + 1} {
		if err := Replicas(bad); err == nil {
			t.Errorf("Replicas(%d) accepted", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{
		"4096": 4096, "64k": 64 << 10, "64K": 64 << 10, "64KiB": 64 << 10, "64kb": 64 << 10,
		"4MiB": 4 << 20, "1m": 1 << 20, "1g": 1 << 30, "2GiB": 2 << 30, "0": 0, "12b": 12, " 16k ": 16 << 10,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "1.5m", "-1", "4 MiB MiB", "1x", "99999999999999999999g", "8589934592g"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 512: "512B", 4096: "4KiB", 4 << 20: "4MiB", 3 << 29: "1.5GiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
	// What FormatSize writes of a whole size, ParseSize reads back.
	for _, n := range []int{1, 4096, 16 << 10, 4 << 20, 1 << 30} {
		if got, err := ParseSize(FormatSize(int64(n))); err != nil || got != n {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", n, got, err)
		}
	}
}

func TestSizeFlag(t *testing.T) {
	var n int
	f := SizeFlag{P: &n}
	if f.String() != "" {
		t.Errorf("zero SizeFlag shows %q", f.String())
	}
	if err := f.Set("4MiB"); err != nil || n != 4<<20 || f.String() != "4MiB" {
		t.Errorf("Set(4MiB): n %d, %v, shows %q", n, err, f.String())
	}
	if err := f.Set("huge"); err == nil {
		t.Error("Set(huge) accepted")
	}
}
