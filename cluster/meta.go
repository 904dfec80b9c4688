package cluster

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Format constants of the member metadata (see the package comment). They
// are on the wire between versions of rpstream and must never change.
const (
	// MetaVersion is the version byte this package writes.
	MetaVersion = 1
	// MaxMetaSize bounds encoded metadata; memberlist allows 512 bytes.
	MaxMetaSize = 512
	// MaxAddrLen bounds each address string.
	MaxAddrLen = 255

	flagLeaving = 1 << 0 // the only flag of version 1
)

// Meta is what a member tells the others about itself.
type Meta struct {
	Role Role
	// Leaving is set by Cluster.Leave just before the member leaves, so
	// that the others report it as left rather than dead, and stop
	// placing streams on it at once.
	Leaving    bool
	Capacity   uint64
	ClientAddr string // client (gRPC) host:port; may be empty
	PeerAddr   string // peer (control and rdma) host:port; may be empty
}

// Validate checks that m can be encoded and would parse back.
func (m Meta) Validate() error {
	if m.Role != RoleNode && m.Role != RoleBackup {
		return fmt.Errorf("%w: role %d", ErrBadMeta, m.Role)
	}
	for _, a := range []string{m.ClientAddr, m.PeerAddr} {
		if err := checkAddr(a); err != nil {
			return err
		}
	}
	return nil
}

func checkAddr(a string) error {
	if a == "" {
		return nil
	}
	if len(a) > MaxAddrLen {
		return fmt.Errorf("%w: address of %d bytes", ErrBadMeta, len(a))
	}
	if _, _, err := splitHostPort(a); err != nil {
		return fmt.Errorf("%w: address %q: %w", ErrBadMeta, a, err)
	}
	return nil
}

// Encode appends m's encoding to b. It fails for a Meta that does not
// Validate.
func (m Meta) Encode(b []byte) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var flags byte
	if m.Leaving {
		flags |= flagLeaving
	}
	b = append(b, MetaVersion, byte(m.Role), flags)
	b = binary.AppendUvarint(b, m.Capacity)
	for _, a := range []string{m.ClientAddr, m.PeerAddr} {
		b = binary.AppendUvarint(b, uint64(len(a)))
		b = append(b, a...)
	}
	return b, nil
}

// ParseMeta decodes metadata written by Encode. Anything else (an unknown
// version or role, a truncated or oversized field, trailing bytes, an
// address that is not host:port) fails with ErrBadMeta.
func ParseMeta(b []byte) (Meta, error) {
	var m Meta
	orig := b
	if len(b) > MaxMetaSize {
		return m, fmt.Errorf("%w: %d bytes", ErrBadMeta, len(b))
	}
	if len(b) < 3 {
		return m, fmt.Errorf("%w: %d bytes", ErrBadMeta, len(b))
	}
	if b[0] != MetaVersion {
		return m, fmt.Errorf("%w: version %d", ErrBadMeta, b[0])
	}
	if b[2]&^flagLeaving != 0 {
		return m, fmt.Errorf("%w: flags %#x", ErrBadMeta, b[2])
	}
	m.Role, m.Leaving = Role(b[1]), b[2]&flagLeaving != 0
	b = b[3:]
	c, n := binary.Uvarint(b)
	if n <= 0 {
		return Meta{}, fmt.Errorf("%w: capacity", ErrBadMeta)
	}
	m.Capacity, b = c, b[n:]
	var addrs [2]string
	for i := range addrs {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > MaxAddrLen || l > uint64(len(b)-n) {
			return Meta{}, fmt.Errorf("%w: address %d length", ErrBadMeta, i)
		}
		addrs[i], b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	if len(b) != 0 {
		return Meta{}, fmt.Errorf("%w: %d trailing bytes", ErrBadMeta, len(b))
	}
	m.ClientAddr, m.PeerAddr = addrs[0], addrs[1]
	if err := m.Validate(); err != nil {
		return Meta{}, err
	}
	// Non-minimal varints would let two encodings mean one Meta; refuse
	// them so that Encode(ParseMeta(b)) == b.
	if enc, _ := m.Encode(nil); !bytes.Equal(enc, orig) {
		return Meta{}, fmt.Errorf("%w: non-minimal encoding", ErrBadMeta)
	}
	return m, nil
}
