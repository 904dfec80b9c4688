package tcp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rpstream/rpstream/pki"
)

// testStates returns a sending and a receiving state of one direction
// (same key and IV), as both ends of a connection derive them.
func testStates(t *testing.T, seed byte) (*aeadState, *aeadState) {
	t.Helper()
	key := make([]byte, sealedKeyLen)
	for i := range key {
		key[i] = seed + byte(i)
	}
	a, err := newAEADState(key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newAEADState(key)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// sealFrames seals each of frames as one batch (sealer.add per frame,
// then bytes) and returns the concatenated wire bytes.
func sealFrames(s *sealer, frames ...[]byte) []byte {
	var wire []byte
	for _, f := range frames {
		s.reset()
		s.add(f)
		wire = append(wire, s.bytes()...)
	}
	return wire
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) + seed
	}
	return b
}

// TestSealedRoundTrip: what is sealed, in batches of any size (records
// split at maxPlain), reads back exactly, whatever the reader's buffer
// sizes; and the wire holds none of it in clear.
func TestSealedRoundTrip(t *testing.T) {
	send, _ := testStates(t, 1)
	s := newSealer(send)
	frames := [][]byte{pattern(1, 1), pattern(32, 2), pattern(maxPlain-1, 3), pattern(maxPlain, 4), pattern(maxPlain+1, 5), pattern(3*maxPlain+77, 6)}
	wire := sealFrames(s, frames...)
	// A batch of several frames, and a raw (already sealed) part first.
	s.reset()
	tail := sealFrames(newSealer(send), pattern(100, 7)) // the next record number after the frames above
	s.raw(tail)
	want := bytes.Join(frames, nil)
	want = append(want, pattern(100, 7)...)
	// send's counter moved on with tail; s continues after it.
	s.add(pattern(10, 8))
	s.add(pattern(20, 9))
	wire = append(wire, s.bytes()...)
	want = append(want, pattern(10, 8)...)
	want = append(want, pattern(20, 9)...)
	if bytes.Contains(wire, pattern(64, 6)[1:]) || bytes.Contains(wire, pattern(maxPlain, 4)[100:200]) {
		t.Fatal("plaintext on the wire")
	}
	for _, chunk := range []int{1, 7, 4096, maxPlain, 1 << 20} {
		_, recv := testStates(t, 1)
		o := newOpener(recv, bytes.NewReader(wire))
		var got []byte
		buf := make([]byte, chunk)
		for {
			n, err := o.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reads of %d: %v", chunk, err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("reads of %d: got %d bytes, want %d (equal: %v)", chunk, len(got), len(want), bytes.Equal(got, want))
		}
	}
}

// TestSealedRejected: a record altered, replayed, reordered, cut, of a
// length out of bounds, or sealed under another key, is an error, never
// data.
func TestSealedRejected(t *testing.T) {
	records := func(seed byte) [][]byte {
		send, _ := testStates(t, seed)
		s := newSealer(send)
		var rs [][]byte
		for i := range 3 {
			rs = append(rs, bytes.Clone(sealFrames(s, pattern(100+i, byte(i)))))
		}
		return rs
	}
	rs := records(1)
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	flip := func(b []byte, at int) []byte {
		b = bytes.Clone(b)
		b[at] ^= 0x40
		return b
	}
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, maxPlain+sealedTag+1)
	tiny := make([]byte, 4)
	binary.BigEndian.PutUint32(tiny, sealedTag)
	for _, tc := range []struct {
		name string
		wire []byte
		ok   int   // records that read back before the error
		want error // nil: errBadRecord
	}{
		{"ciphertext byte flipped", join(rs[0], flip(rs[1], 10)), 1, nil},
		{"tag byte flipped", join(flip(rs[0], len(rs[0])-1)), 0, nil},
		{"length changed", join(rs[0], flip(rs[1], 3)), 1, nil},
		{"record replayed", join(rs[0], rs[0]), 1, nil},
		{"records reordered", join(rs[0], rs[2], rs[1]), 1, nil},
		{"record dropped", join(rs[0], rs[2]), 1, nil},
		{"another key", join(records(9)[0]), 0, nil},
		{"length above the limit", join(rs[0], huge, make([]byte, 64)), 1, nil},
		{"length without data", join(tiny, make([]byte, 64)), 0, nil},
		{"cut inside a record", join(rs[0], rs[1][:len(rs[1])-5]), 1, io.ErrUnexpectedEOF},
		{"cut inside a header", join(rs[0], rs[1][:2]), 1, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, recv := testStates(t, 1)
			o := newOpener(recv, bytes.NewReader(tc.wire))
			var got []byte
			buf := make([]byte, 1<<20)
			var err error
			for err == nil {
				var n int
				n, err = o.Read(buf)
				got = append(got, buf[:n]...)
			}
			want := []byte{}
			for i := range tc.ok {
				want = append(want, pattern(100+i, byte(i))...)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("read %d bytes before the error, want the %d of %d good record(s)", len(got), len(want), tc.ok)
			}
			wantErr := tc.want
			if wantErr == nil {
				wantErr = errBadRecord
			}
			if !errors.Is(err, wantErr) {
				t.Fatalf("error %v, want %v", err, wantErr)
			}
			t.Logf("%v", err)
		})
	}
}

// TestRecordReaderStopsAtRecordEnd: through recordReader, a tls.Conn reads
// the peer's TLS records and nothing after them, so the bytes a peer
// sends past its last TLS record (the first sealed record) are still in
// the socket for the sealed reader.
func TestRecordReaderStopsAtRecordEnd(t *testing.T) {
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keys := func(name string) *pki.Keys { return testNodeKeys(t, ca, name) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	after := []byte("the first bytes after TLS")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialed := make(chan error, 1)
	go func() {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			dialed <- err
			return
		}
		defer nc.Close()
		tc := tls.Client(&recordReader{Conn: nc}, keys("a").PeerConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			dialed <- err
			return
		}
		// Two TLS records, then raw bytes at once, as a peer that
		// switches to sealed records right after its hello does.
		tc.Write([]byte("hello"))
		tc.Write([]byte("proof"))
		_, err = nc.Write(after)
		if err == nil {
			_, err = io.ReadFull(nc, make([]byte, 1)) // wait for the other side
		}
		dialed <- err
	}()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Server(&recordReader{Conn: nc}, keys("b").PeerConfig())
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let everything the dialer sent arrive
	got := make([]byte, 10)
	if _, err := io.ReadFull(tc, got); err != nil || string(got) != "helloproof" {
		t.Fatalf("through TLS: %q, %v", got, err)
	}
	raw := make([]byte, len(after))
	if _, err := io.ReadFull(nc, raw); err != nil || !bytes.Equal(raw, after) {
		t.Fatalf("after TLS, from the socket: %q, %v (want %q: the tls.Conn read past its records)", raw, err, after)
	}
	nc.Write([]byte{1})
	if err := <-dialed; err != nil {
		t.Fatal(err)
	}
}

// testNodeKeys issues a node certificate for name from ca into a fresh
// directory and loads it (the external tests use it as NodeKeys).
func testNodeKeys(t testing.TB, ca *pki.CA, name string) *pki.Keys {
	t.Helper()
	f, err := ca.WriteFiles(t.TempDir(), pki.Request{Name: name, Node: true, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	k, err := pki.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// FuzzOpener: whatever bytes a peer sends, the sealed reader returns an
// error or data that was sealed under its key, never a panic, and never
// reads a record longer than the bound.
func FuzzOpener(f *testing.F) {
	send, _ := testStates(&testing.T{}, 1)
	s := newSealer(send)
	good := sealFrames(s, pattern(100, 1), pattern(maxPlain+3, 2))
	f.Add(good)
	f.Add(good[:50])
	f.Add([]byte{0, 0, 0, 17, 1, 2, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, wire []byte) {
		_, recv := testStates(t, 1)
		o := newOpener(recv, bytes.NewReader(wire))
		buf := make([]byte, 4096)
		var got []byte
		for {
			n, err := o.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		// What came out is a prefix of the good stream's plaintext
		// (the only records sealed under this key in the corpus), or
		// nothing.
		want := append(pattern(100, 1), pattern(maxPlain+3, 2)...)
		if len(got) > 0 && !bytes.HasPrefix(want, got) {
			t.Fatalf("%d bytes read that were never sealed", len(got))
		}
	})
}
