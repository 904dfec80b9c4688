package node

import "testing"

// The default open-streams limit leaves an eighth of the descriptors (at
// least 256) for the rest and gives each open stream or copy three, or
// one when the provider shares a socket per peer.
func TestDefaultMaxOpenStreams(t *testing.T) {
	for _, c := range []struct {
		nofile uint64
		want   int
	}{
		{20000, (20000 - 2500) / 3},
		{1 << 20, (1<<20 - 1<<17) / 3},
		{1024, (1024 - 256) / 3},
		{259, 0},
		{100, 0},
		{1 << 62, (1<<24 - 1<<21) / 3},
	} {
		if got := DefaultMaxOpenStreams(c.nofile, false); got != c.want {
			t.Errorf("DefaultMaxOpenStreams(%d, false) = %d, want %d", c.nofile, got, c.want)
		}
	}
	for _, c := range []struct {
		nofile uint64
		want   int
	}{
		{20000, 20000 - 2500},
		{1024, 1024 - 256},
		{258, 2},
		{257, 0},
	} {
		if got := DefaultMaxOpenStreams(c.nofile, true); got != c.want {
			t.Errorf("DefaultMaxOpenStreams(%d, true) = %d, want %d", c.nofile, got, c.want)
		}
	}
	if n := processMaxOpenStreams(true); n < 0 {
		t.Fatalf("this process's limit %d", n)
	}
}
