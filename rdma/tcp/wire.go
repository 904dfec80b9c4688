package tcp

import (
	"encoding/binary"
	"fmt"

	"github.com/rpstream/rpstream/rdma"
)

// Frame types; see the package comment. Never renumber.
const (
	frameWrite    = 1
	frameRead     = 2
	frameFlush    = 3
	frameAtomic   = 4
	frameSend     = 5
	frameOpen     = 6
	frameAck      = 16
	frameReadResp = 17
	frameError    = 18
	frameClose    = 19
)

// maxChannels is how many channels (Conns) one connection carries at
// once; channel 0 is never used.
const maxChannels = 1<<16 - 1

const hdrSize = 32

// Error codes carried in an error frame's arg. Never renumber.
const (
	codeBadKey     = 1
	codeBounds     = 2
	codeAccess     = 3
	codeAlign      = 4
	codeProtocol   = 5
	codePersist    = 6
	codeTooLarge   = 7
	codeNoRecv     = 8
	codeRecvTooBig = 9
	codeInflight   = 10
)

var codeText = map[uint8]string{
	codeBadKey:     "unknown or revoked key",
	codeBounds:     "range outside the registration",
	codeAccess:     "registration lacks the access right",
	codeAlign:      "atomic write not 8-byte aligned",
	codeProtocol:   "protocol violation",
	codePersist:    "persister failed",
	codeTooLarge:   "transfer too large",
	codeNoRecv:     "no receive posted and the receive queue is full",
	codeRecvTooBig: "message larger than the posted receive",
	codeInflight:   "peer exceeds its in-flight limit",
}

// remoteErr maps a code from an error frame to the error an Op reports.
func remoteErr(code uint8) error {
	text, ok := codeText[code]
	if !ok {
		return fmt.Errorf("%w: unknown error code %d", rdma.ErrProtocol, code)
	}
	switch code {
	case codePersist:
		return fmt.Errorf("%w: %s", rdma.ErrRemoteFailure, text)
	case codeProtocol, codeInflight:
		return fmt.Errorf("%w: target says: %s", rdma.ErrProtocol, text)
	}
	return fmt.Errorf("%w: %s", rdma.ErrRemoteAccess, text)
}

type header struct {
	typ, arg uint8
	ch       uint16 // the channel (Conn) the frame belongs to
	n        uint32
	id       uint64
	key      uint64
	off      uint64
}

func (h *header) put(b *[hdrSize]byte) {
	b[0], b[1] = h.typ, h.arg
	binary.LittleEndian.PutUint16(b[2:], h.ch)
	binary.LittleEndian.PutUint32(b[4:], h.n)
	binary.LittleEndian.PutUint64(b[8:], h.id)
	binary.LittleEndian.PutUint64(b[16:], h.key)
	binary.LittleEndian.PutUint64(b[24:], h.off)
}

func parseHeader(b *[hdrSize]byte) header {
	return header{
		typ: b[0], arg: b[1],
		ch:  binary.LittleEndian.Uint16(b[2:]),
		n:   binary.LittleEndian.Uint32(b[4:]),
		id:  binary.LittleEndian.Uint64(b[8:]),
		key: binary.LittleEndian.Uint64(b[16:]),
		off: binary.LittleEndian.Uint64(b[24:]),
	}
}
