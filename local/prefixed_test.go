package local_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/mover"
)

// TestPrefixed: an entry appended as a prefix and a payload (the Stream's
// AppendNoSyncPrefixed, an Appender's StartPrefixed with each engine) is
// byte for byte, checksum included, the entry of the assembled payload:
// a reopened stream (recovery checks every checksum) reads them back.
func TestPrefixed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	s, err := local.Create(path, local.Options{RegionSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	add := func(prefix, p []byte) {
		want = append(want, append(append([]byte{}, prefix...), p...))
	}
	ctx := context.Background()
	for i := range 40 {
		prefix, p := []byte(fmt.Sprintf("hdr%d:", i)), bytes.Repeat([]byte{byte(i)}, i*97)
		if i%5 == 0 {
			p = nil
		}
		if _, err := s.AppendNoSyncPrefixed(prefix, p); err != nil {
			t.Fatal(err)
		}
		add(prefix, p)
	}
	for _, e := range []mover.Engine{mover.EngineSync, mover.EngineCPU} {
		m, err := mover.New(mover.Config{Engine: e})
		if err != nil {
			t.Fatal(err)
		}
		a, err := local.NewAppender(s, m, local.AppenderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			prefix, p := []byte{byte(i), 1, 2}, bytes.Repeat([]byte{byte(i * 7)}, (i*131)%3000)
			if _, err := a.StartPrefixed(ctx, prefix, p); err != nil {
				t.Fatal(err)
			}
			add(prefix, p)
		}
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	if err := s.Sync(uint64(len(want) - 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = local.Open(path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Committed(); got != uint64(len(want)) {
		t.Fatalf("reopened with %d entries, want %d", got, len(want))
	}
	it := s.Iterator(0)
	for i := range want {
		if !it.Next() {
			t.Fatalf("entry %d missing: %v", i, it.Err())
		}
		if !bytes.Equal(it.Entry().Data, want[i]) {
			t.Fatalf("entry %d: %q, want %q", i, it.Entry().Data, want[i])
		}
	}
}
