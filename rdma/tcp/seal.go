package tcp

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
)

// Sealed records. With TLS configured, a connection runs the TLS 1.3
// handshake (mutual: both sides present a certificate the other's
// tls.Config verifies) and the hello exchange inside it, and then leaves
// crypto/tls: both directions carry the frames in records of their own,
// sealed with AES-128-GCM under a key and IV per direction exported from
// that TLS session (RFC 8446 section 7.5, label exporterLabel). Each record
// is
//
//	off  size  field
//	0    4     m: length of what follows, big-endian (the AEAD's
//	           additional data); sealedTag < m <= maxPlain+sealedTag
//	4    m     the frames' bytes, encrypted, then the 16-byte tag
//
// with the nonce of record k (k = 0, 1, ... per direction) the IV XOR k in
// its last 8 bytes, as TLS 1.3 forms its nonces. A record that fails
// authentication, is out of order, replayed or cut ends the connection.
//
// Why not crypto/tls for the frames themselves: a tls.Conn is not a
// syscall.Conn, so a batch could not be written with one non-blocking
// system call on the goroutine that produced it (writer.tryDirect): every
// batch and every ack went through the writer goroutine, one wake-up more
// on each side of each batch, which made TLS cost about 15 % of a
// replicated append's throughput on loopback. The records keep what the
// TLS session gives (the peer's identity, confidentiality, integrity and
// order under fresh keys) and let a batch go out as one write.
//
// Leaving crypto/tls mid-connection is safe only if no TLS record is read
// past the last one the hello exchange needs: recordReader gives the
// tls.Conn the socket's bytes up to the end of the current TLS record and
// never more, so the first sealed record stays in the socket. Nothing is
// written through the tls.Conn after the hello (a listener's session
// tickets go out before its hello, and are read with it).

const (
	exporterLabel = "EXPORTER-rpstream rdma/tcp sealed records"
	sealedHdr     = 4
	sealedTag     = 16
	// maxPlain bounds a record's plaintext: a record is read whole
	// before it is opened.
	maxPlain = 64 << 10
	// sealedKeyLen is one direction's key and IV.
	sealedKeyLen = 16 + 12
)

// sealKeys derives the two directions' AEADs from the TLS session. The
// dialer sends with the first half of the exported bytes, the listener
// with the second.
func sealKeys(tc *tls.Conn, dialer bool) (send, recv *aeadState, err error) {
	st := tc.ConnectionState()
	if st.Version != tls.VersionTLS13 {
		return nil, nil, fmt.Errorf("sealed records need TLS 1.3, the session is %s", tls.VersionName(st.Version))
	}
	km, err := st.ExportKeyingMaterial(exporterLabel, nil, 2*sealedKeyLen)
	if err != nil {
		return nil, nil, fmt.Errorf("export keys from the TLS session: %w", err)
	}
	d2l, err := newAEADState(km[:sealedKeyLen])
	if err != nil {
		return nil, nil, err
	}
	l2d, err := newAEADState(km[sealedKeyLen:])
	if err != nil {
		return nil, nil, err
	}
	if dialer {
		return d2l, l2d, nil
	}
	return l2d, d2l, nil
}

// aeadState is one direction's cipher and record counter.
type aeadState struct {
	aead cipher.AEAD
	iv   [12]byte
	seq  uint64
}

func newAEADState(key []byte) (*aeadState, error) {
	b, err := aes.NewCipher(key[:16])
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	s := &aeadState{aead: g}
	copy(s.iv[:], key[16:])
	return s, nil
}

// nonce returns the next record's nonce and advances the counter.
func (s *aeadState) nonce() [12]byte {
	n := s.iv
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], s.seq)
	for i := range k {
		n[4+i] ^= k[i]
	}
	s.seq++
	return n
}

// sealer gathers frames' bytes into records in out; the holder of the
// writer's busy flag owns it.
type sealer struct {
	st    *aeadState
	out   []byte
	start int // offset in out of the open record's header, or -1
}

func newSealer(st *aeadState) *sealer {
	return &sealer{st: st, start: -1}
}

// reset starts an empty output. A buffer grown past keepSealed by a large
// frame is let go rather than kept for the connection's life.
func (s *sealer) reset() {
	if cap(s.out) > keepSealed {
		s.out = nil
	}
	s.out, s.start = s.out[:0], -1
}

// keepSealed is the largest output buffer a sealer keeps between batches.
const keepSealed = 1 << 20

// add appends p to the open record (opening one if none is), closing it
// and opening another each time it reaches maxPlain.
func (s *sealer) add(p []byte) {
	for len(p) > 0 {
		if s.start < 0 {
			s.start = len(s.out)
			s.out = append(s.out, 0, 0, 0, 0)
		}
		n := min(len(p), maxPlain-(len(s.out)-s.start-sealedHdr))
		s.out = append(s.out, p[:n]...)
		p = p[n:]
		if len(s.out)-s.start-sealedHdr == maxPlain {
			s.close()
		}
	}
}

// raw appends bytes already sealed (what a direct write left unsent),
// after closing the open record.
func (s *sealer) raw(p []byte) {
	s.close()
	s.out = append(s.out, p...)
}

// close seals the open record, if any, in place.
func (s *sealer) close() {
	if s.start < 0 {
		return
	}
	s.out = slices.Grow(s.out, sealedTag) // the tag fits: sealed in place
	h := s.out[s.start : s.start+sealedHdr]
	plain := s.out[s.start+sealedHdr:]
	binary.BigEndian.PutUint32(h, uint32(len(plain)+sealedTag))
	n := s.st.nonce()
	s.st.aead.Seal(plain[:0], n[:], plain, h)
	s.out = s.out[:s.start+sealedHdr+len(plain)+sealedTag]
	s.start = -1
}

// bytes closes the open record and returns the output.
func (s *sealer) bytes() []byte {
	s.close()
	return s.out
}

// opener is the reading side: an io.Reader of the plaintext of the
// records read from r.
type opener struct {
	st    *aeadState
	r     *bufio.Reader
	buf   []byte
	plain []byte // opened, not yet read
}

func newOpener(st *aeadState, nc io.Reader) *opener {
	return &opener{st: st, r: bufio.NewReaderSize(nc, sealedHdr+maxPlain+sealedTag)}
}

// errBadRecord wraps every failure to open a record.
var errBadRecord = errors.New("rdma/tcp: bad sealed record from the peer")

func (o *opener) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(o.plain) == 0 {
		m, err := o.peek()
		if err != nil {
			return 0, err
		}
		if len(p) >= m-sealedTag {
			// Open straight into the caller's buffer.
			plain, err := o.open(p[:0], m)
			return len(plain), err
		}
		plain, err := o.open(o.buf[:0], m)
		if err != nil {
			return 0, err
		}
		o.buf, o.plain = plain[:0], plain
	}
	n := copy(p, o.plain)
	o.plain = o.plain[n:]
	return n, nil
}

// peek waits for the next record to be buffered whole and returns the
// length of what follows its header.
func (o *opener) peek() (int, error) {
	h, err := o.r.Peek(sealedHdr)
	if err != nil {
		return 0, unexpectedEOF(err, len(h))
	}
	m := int(binary.BigEndian.Uint32(h))
	if m <= sealedTag || m > maxPlain+sealedTag {
		return 0, fmt.Errorf("%w: length %d (must be from %d to %d)", errBadRecord, m, sealedTag+1, maxPlain+sealedTag)
	}
	if _, err := o.r.Peek(sealedHdr + m); err != nil {
		return 0, unexpectedEOF(err, 1)
	}
	return m, nil
}

// open authenticates and decrypts the buffered record (m bytes after its
// header) into dst and consumes it.
func (o *opener) open(dst []byte, m int) ([]byte, error) {
	rec, _ := o.r.Peek(sealedHdr + m)
	n := o.st.nonce()
	plain, err := o.st.aead.Open(dst, n[:], rec[sealedHdr:], rec[:sealedHdr])
	if err != nil {
		return nil, fmt.Errorf("%w: record %d fails authentication (altered, replayed, out of order, or not sealed by the peer the TLS handshake authenticated)", errBadRecord, o.st.seq-1)
	}
	o.r.Discard(sealedHdr + m)
	return plain, nil
}

// unexpectedEOF turns an EOF inside a record (got > 0 bytes of it) into
// io.ErrUnexpectedEOF: the peer's stream was cut mid-record.
func unexpectedEOF(err error, got int) error {
	if errors.Is(err, io.EOF) && got > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}

// recordReader hands a tls.Conn the socket's bytes up to the end of the
// TLS record being read and never beyond, so that what follows the last
// TLS record (the first sealed record) stays in the socket.
type recordReader struct {
	net.Conn
	hdr  [5]byte
	have int // bytes of hdr read
	left int // bytes of the current record's body still to give
}

func (r *recordReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.left == 0 {
		// A record header: give it, keeping a copy to learn the body's
		// length.
		want := min(len(p), len(r.hdr)-r.have)
		n, err := r.Conn.Read(p[:want])
		copy(r.hdr[r.have:], p[:n])
		r.have += n
		if r.have == len(r.hdr) {
			r.left = int(binary.BigEndian.Uint16(r.hdr[3:5]))
			r.have = 0
		}
		return n, err
	}
	n, err := r.Conn.Read(p[:min(len(p), r.left)])
	r.left -= n
	return n, err
}
