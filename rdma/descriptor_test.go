package rdma

import (
	"bytes"
	"errors"
	"testing"
)

func TestDescriptorRoundTrip(t *testing.T) {
	d := Descriptor{Provider: ProviderVerbs, Usage: UsageWriteDst | UsageFlushPersistence, Addr: 0x7f0000001000, Len: 1 << 20, Key: 0x1234}
	b, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != DescriptorSize {
		t.Fatalf("%d bytes", len(b))
	}
	var got Descriptor
	if err := got.UnmarshalBinary(b); err != nil || got != d {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestDescriptorRejects(t *testing.T) {
	good, _ := Descriptor{Provider: ProviderTCP, Usage: UsageWriteDst, Len: 8, Key: 1}.MarshalBinary()
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"empty":       nil,
		"short":       good[:31],
		"long":        append(bytes.Clone(good), 0),
		"magic":       mut(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version":     mut(func(b []byte) []byte { b[2] = 2; return b }),
		"provider":    mut(func(b []byte) []byte { b[3] = 9; return b }),
		"no usage":    mut(func(b []byte) []byte { b[4] = 0; return b }),
		"local usage": mut(func(b []byte) []byte { b[4] |= byte(UsageWriteSrc); return b }),
		"zero length": mut(func(b []byte) []byte { clear(b[16:24]); return b }),
		"overflow":    mut(func(b []byte) []byte { copy(b[8:16], bytes.Repeat([]byte{0xff}, 8)); return b }),
		"verbs key": mut(func(b []byte) []byte {
			b[3] = ProviderVerbs
			b[28] = 1
			return b
		}),
	}
	for name, b := range cases {
		if _, err := ParseDescriptor(b); !errors.Is(err, ErrBadDescriptor) {
			t.Errorf("%s: %v, want ErrBadDescriptor", name, err)
		}
	}
}

func FuzzParseDescriptor(f *testing.F) {
	good, _ := Descriptor{Provider: ProviderTCP, Usage: RemoteUsage, Len: 4096, Key: 77}.MarshalBinary()
	f.Add(good)
	f.Add([]byte("RD"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDescriptor(b)
		if err != nil {
			if !errors.Is(err, ErrBadDescriptor) {
				t.Fatalf("error %v does not wrap ErrBadDescriptor", err)
			}
			return
		}
		again, err := d.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted %x but re-marshals to %x, %v", b, again, err)
		}
	})
}
