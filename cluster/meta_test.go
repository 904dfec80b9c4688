package cluster

import (
	"bytes"
	"errors"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{
		{Role: RoleNode, Capacity: 1, ClientAddr: "127.0.0.1:7000", PeerAddr: "127.0.0.1:7300"},
		{Role: RoleBackup, Capacity: 1 << 60, ClientAddr: "[::1]:1", PeerAddr: "backup.example:65535"},
		{Role: RoleNode},
		{Role: RoleNode, Leaving: true, Capacity: 3},
	} {
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatalf("encode %+v: %v", m, err)
		}
		if len(b) > MaxMetaSize {
			t.Fatalf("%d bytes", len(b))
		}
		got, err := ParseMeta(b)
		if err != nil || got != m {
			t.Fatalf("parse(encode(%+v)) = %+v, %v", m, got, err)
		}
	}
}

func TestMetaRejects(t *testing.T) {
	good, _ := Meta{Role: RoleNode, Capacity: 5, ClientAddr: "127.0.0.1:1", PeerAddr: "127.0.0.1:2"}.Encode(nil)
	cases := map[string][]byte{
		"empty":           nil,
		"version only":    {MetaVersion},
		"version 2":       append([]byte{2}, good[1:]...),
		"role 0":          append([]byte{MetaVersion, 0}, good[2:]...),
		"role 3":          append([]byte{MetaVersion, 3}, good[2:]...),
		"truncated":       good[:len(good)-1],
		"trailing":        append(append([]byte{}, good...), 0),
		"long length":     {MetaVersion, 1, 1, 200, 'a'},
		"huge length":     {MetaVersion, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"not host:port":   {MetaVersion, 1, 1, 3, 'a', 'b', 'c', 0},
		"non-minimal":     {MetaVersion, 1, 0x81, 0x00, 0, 0},
		"oversized":       make([]byte, MaxMetaSize+1),
		"capacity unterm": {MetaVersion, 1, 0, 0x80},
	}
	for name, b := range cases {
		if _, err := ParseMeta(b); !errors.Is(err, ErrBadMeta) {
			t.Errorf("%s: err %v, want ErrBadMeta", name, err)
		}
	}
	if _, err := (Meta{Role: RoleNode, ClientAddr: "nope"}).Encode(nil); !errors.Is(err, ErrBadMeta) {
		t.Errorf("encode bad address: %v", err)
	}
}

func FuzzParseMeta(f *testing.F) {
	good, _ := Meta{Role: RoleBackup, Capacity: 300, ClientAddr: "127.0.0.1:1", PeerAddr: "[::1]:2"}.Encode(nil)
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{MetaVersion, 1, 0, 0, 0, 0})
	f.Add([]byte{MetaVersion, 2, 1, 0x80, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMeta(b)
		if err != nil {
			if !errors.Is(err, ErrBadMeta) {
				t.Fatalf("error %v does not wrap ErrBadMeta", err)
			}
			return
		}
		// Whatever parses is canonical: it encodes back to the same bytes.
		enc, err := m.Encode(nil)
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("re-encode %+v: %x, %v; want %x", m, enc, err, b)
		}
	})
}
