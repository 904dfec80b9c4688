package rdma

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Provider identifiers carried in a Descriptor. They are part of the wire
// format and must never change.
const (
	ProviderTCP   uint8 = 1
	ProviderVerbs uint8 = 2
)

// Descriptor describes a registration to a remote peer: what librpma calls
// a remote memory region. Its wire form (MarshalBinary) is:
//
//	off size field
//	0   2    magic "RD"
//	2   1    DescriptorVersion
//	3   1    provider (ProviderTCP, ProviderVerbs)
//	4   4    usage (RemoteUsage bits only), little-endian
//	8   8    address of the first byte on the target (verbs; 0 for tcp)
//	16  8    length in bytes, > 0
//	24  8    key (verbs rkey: < 2^32)
//
// This layout must never change; a new layout gets a new version.
type Descriptor struct {
	Provider uint8
	Usage    Usage
	Addr     uint64
	Len      uint64
	Key      uint64
}

// DescriptorVersion is the version of the Descriptor wire form.
const DescriptorVersion = 1

// DescriptorSize is the length of a marshalled Descriptor.
const DescriptorSize = 32

// MarshalBinary implements encoding.BinaryMarshaler.
func (d Descriptor) MarshalBinary() ([]byte, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	return d.AppendBinary(make([]byte, 0, DescriptorSize))
}

// AppendBinary appends the wire form to b.
func (d Descriptor) AppendBinary(b []byte) ([]byte, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	b = append(b, 'R', 'D', DescriptorVersion, d.Provider)
	b = binary.LittleEndian.AppendUint32(b, uint32(d.Usage))
	b = binary.LittleEndian.AppendUint64(b, d.Addr)
	b = binary.LittleEndian.AppendUint64(b, d.Len)
	b = binary.LittleEndian.AppendUint64(b, d.Key)
	return b, nil
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler; see
// ParseDescriptor.
func (d *Descriptor) UnmarshalBinary(b []byte) error {
	p, err := ParseDescriptor(b)
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDescriptor parses exactly one Descriptor of the current version and
// rejects anything else (short, long, unknown magic, version, provider or
// usage bits, empty or overflowing range) with ErrBadDescriptor.
func ParseDescriptor(b []byte) (Descriptor, error) {
	if len(b) != DescriptorSize {
		return Descriptor{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadDescriptor, len(b), DescriptorSize)
	}
	if b[0] != 'R' || b[1] != 'D' {
		return Descriptor{}, fmt.Errorf("%w: bad magic %q", ErrBadDescriptor, b[:2])
	}
	if b[2] != DescriptorVersion {
		return Descriptor{}, fmt.Errorf("%w: version %d, this build reads %d", ErrBadDescriptor, b[2], DescriptorVersion)
	}
	d := Descriptor{
		Provider: b[3],
		Usage:    Usage(binary.LittleEndian.Uint32(b[4:])),
		Addr:     binary.LittleEndian.Uint64(b[8:]),
		Len:      binary.LittleEndian.Uint64(b[16:]),
		Key:      binary.LittleEndian.Uint64(b[24:]),
	}
	if err := d.validate(); err != nil {
		return Descriptor{}, err
	}
	return d, nil
}

func (d Descriptor) validate() error {
	switch {
	case d.Provider != ProviderTCP && d.Provider != ProviderVerbs:
		return fmt.Errorf("%w: unknown provider %d", ErrBadDescriptor, d.Provider)
	case d.Usage == 0 || d.Usage&^RemoteUsage != 0:
		return fmt.Errorf("%w: usage %#x", ErrBadDescriptor, uint32(d.Usage))
	case d.Len == 0 || d.Len > math.MaxInt64:
		return fmt.Errorf("%w: length %d", ErrBadDescriptor, d.Len)
	case d.Addr > math.MaxUint64-d.Len:
		return fmt.Errorf("%w: address %#x + length %d overflows", ErrBadDescriptor, d.Addr, d.Len)
	case d.Provider == ProviderVerbs && d.Key > math.MaxUint32:
		return fmt.Errorf("%w: verbs key %#x wider than 32 bits", ErrBadDescriptor, d.Key)
	}
	return nil
}

// CheckRemote checks an operation on [off, off+n) of d that needs usage
// need, before it is posted: the errors it returns do not poison.
func CheckRemote(d Descriptor, provider uint8, off, n int, need Usage) error {
	if d.Provider != provider {
		return fmt.Errorf("%w: descriptor of provider %d on a provider %d connection", ErrBadDescriptor, d.Provider, provider)
	}
	if d.Usage&need != need {
		return fmt.Errorf("%w: remote registration lacks %#x", ErrUsage, uint32(need&^d.Usage))
	}
	if off < 0 || n < 0 || uint64(off) > d.Len || uint64(n) > d.Len-uint64(off) {
		return fmt.Errorf("%w: remote [%d, +%d) of %d bytes", ErrBounds, off, n, d.Len)
	}
	return nil
}

// CheckLocal checks an operation on [off, off+n) of the local mr that
// needs usage need.
func CheckLocal(mr MR, off, n int, need Usage) error {
	if mr == nil {
		return fmt.Errorf("%w: nil local registration", ErrUsage)
	}
	if mr.Usage()&need != need {
		return fmt.Errorf("%w: local registration lacks %#x", ErrUsage, uint32(need&^mr.Usage()))
	}
	if size := len(mr.Bytes()); off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%w: local [%d, +%d) of %d bytes", ErrBounds, off, n, size)
	}
	return nil
}

// CheckFlush checks a Flush of [off, off+n) of d to t on a connection whose
// peer declared remote, as librpma does: a persistence flush needs a target
// that declared DirectWriteToPmem and a registration with
// UsageFlushPersistence (else ErrPersistUnsupported). The errors do not
// poison.
func CheckFlush(d Descriptor, provider uint8, remote PeerInfo, off, n int, t FlushType) error {
	need := UsageFlushVisibility
	switch t {
	case Visibility:
	case Persistence:
		need = UsageFlushPersistence
		if !remote.DirectWriteToPmem || d.Usage&need == 0 {
			return fmt.Errorf("%w: target declared direct write to pmem %v, registration usage %#x",
				ErrPersistUnsupported, remote.DirectWriteToPmem, uint32(d.Usage))
		}
	default:
		return fmt.Errorf("%w: flush type %v", ErrUsage, t)
	}
	return CheckRemote(d, provider, off, n, need)
}
