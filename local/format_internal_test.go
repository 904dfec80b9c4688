package local

import (
	"hash/crc32"
	"testing"
)

func TestEntryCRCMatchesReference(t *testing.T) {
	for _, n := range []int{0, 1, 7, 64, 1000} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i * 7)
		}
		var h [16]byte
		le.PutUint64(h[0:], 0x1122334455667788)
		le.PutUint32(h[8:], 4096)
		le.PutUint32(h[12:], uint32(n))
		want := crc32.Update(crc32.Update(0, castagnoli, h[:]), castagnoli, p)
		if got := entryCRC(0x1122334455667788, 4096, p); got != want {
			t.Fatalf("n=%d: %08x, want %08x", n, got, want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { entryCRC(1, 2, make([]byte, 0)) }); a != 0 {
		t.Fatalf("entryCRC allocates %v times", a)
	}
}
