// Package hs is the connection handshake shared by the rdma providers: an
// exchange of Hellos and a mutual HMAC challenge-response over a shared
// secret.
//
// Wire (all integers little-endian; sizes must never change for version 1):
//
//	dialer   -> listener  Hello (HelloSize bytes, fresh nonce)
//	listener -> dialer    Hello, HMAC-SHA256(secret, "rpstream-rdma server" || dialer Hello || listener Hello)
//	dialer   -> listener  HMAC-SHA256(secret, "rpstream-rdma client" || dialer Hello || listener Hello)
//	listener -> dialer    one byte StatusOK; on any failure the listener
//	                      closes instead
//
// Each proof binds both nonces, so neither a recorded proof nor a reflected
// one is accepted. The listener sends its Hello even when the versions
// differ so that the dialer can report ErrVersion rather than ErrAuth.
//
// Hello:
//
//	off size field
//	0   4    magic "RPHS"
//	4   2    protocol version
//	6   1    provider (rdma.ProviderTCP, rdma.ProviderVerbs)
//	7   1    reserved, zero
//	8   4    capabilities (rdma.Caps)
//	12  4    flags: bit 0 direct write to pmem; other bits zero
//	16  4    max in-flight operations, >= 1
//	20  4    max message size, >= 64
//	24  32   nonce
package hs

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/rpstream/rpstream/rdma"
)

// Sizes on the wire.
const (
	HelloSize = 56
	ProofSize = sha256.Size
	StatusOK  = 0x5a
)

// FlagDirectWriteToPmem is bit 0 of the Hello flags.
const FlagDirectWriteToPmem = 1

// Hello is one side's declaration.
type Hello struct {
	Version     uint16
	Provider    uint8
	Caps        rdma.Caps
	Flags       uint32
	MaxInflight uint32
	MaxMessage  uint32
	Nonce       [32]byte
}

// NewHello fills a Hello from cfg with a fresh nonce.
func NewHello(provider uint8, caps rdma.Caps, cfg rdma.Config) Hello {
	h := Hello{Version: rdma.ProtocolVersion, Provider: provider, Caps: caps,
		MaxInflight: uint32(cfg.MaxInflight), MaxMessage: uint32(cfg.MaxMessage)}
	if cfg.DirectWriteToPmem {
		h.Flags |= FlagDirectWriteToPmem
	}
	rand.Read(h.Nonce[:])
	return h
}

// Marshal returns the wire form.
func (h Hello) Marshal() []byte {
	b := make([]byte, 0, HelloSize)
	b = append(b, "RPHS"...)
	b = binary.LittleEndian.AppendUint16(b, h.Version)
	b = append(b, h.Provider, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(h.Caps))
	b = binary.LittleEndian.AppendUint32(b, h.Flags)
	b = binary.LittleEndian.AppendUint32(b, h.MaxInflight)
	b = binary.LittleEndian.AppendUint32(b, h.MaxMessage)
	return append(b, h.Nonce[:]...)
}

// ParseHello parses a Hello strictly. It does not judge the version: the
// caller compares it.
func ParseHello(b []byte) (Hello, error) {
	if len(b) != HelloSize || string(b[:4]) != "RPHS" || b[7] != 0 {
		return Hello{}, fmt.Errorf("%w: bad hello", rdma.ErrHandshake)
	}
	h := Hello{
		Version:     binary.LittleEndian.Uint16(b[4:]),
		Provider:    b[6],
		Caps:        rdma.Caps(binary.LittleEndian.Uint32(b[8:])),
		Flags:       binary.LittleEndian.Uint32(b[12:]),
		MaxInflight: binary.LittleEndian.Uint32(b[16:]),
		MaxMessage:  binary.LittleEndian.Uint32(b[20:]),
	}
	copy(h.Nonce[:], b[24:])
	if h.Version != rdma.ProtocolVersion {
		return h, fmt.Errorf("%w: peer speaks %d, we speak %d", rdma.ErrVersion, h.Version, rdma.ProtocolVersion)
	}
	if h.Flags&^FlagDirectWriteToPmem != 0 || h.MaxInflight < 1 || h.MaxInflight > 1<<16 ||
		h.MaxMessage < 64 || h.MaxMessage > 1<<20 {
		return Hello{}, fmt.Errorf("%w: hello fields out of range", rdma.ErrHandshake)
	}
	return h, nil
}

// Info converts a peer's Hello for rdma.Conn.Remote.
func (h Hello) Info(provider string) rdma.PeerInfo {
	return rdma.PeerInfo{Version: h.Version, Provider: provider, Caps: h.Caps,
		DirectWriteToPmem: h.Flags&FlagDirectWriteToPmem != 0,
		MaxInflight:       int(h.MaxInflight), MaxMessage: int(h.MaxMessage)}
}

func proof(secret []byte, label string, client, server []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	m.Write(client)
	m.Write(server)
	return m.Sum(nil)
}

// Client runs the dialer's side over rw and returns the listener's Hello.
// rw's reads must deliver whole writes of the peer or be a byte stream.
func Client(rw io.ReadWriter, secret []byte, mine Hello) (Hello, error) {
	ch := mine.Marshal()
	if _, err := rw.Write(ch); err != nil {
		return Hello{}, fmt.Errorf("%w: send hello: %v", rdma.ErrHandshake, err)
	}
	buf := make([]byte, HelloSize+ProofSize)
	if _, err := io.ReadFull(rw, buf); err != nil {
		return Hello{}, fmt.Errorf("%w: no hello from listener (wrong address or rejected): %v", rdma.ErrHandshake, err)
	}
	sh := buf[:HelloSize]
	peer, err := ParseHello(sh)
	if err != nil {
		return Hello{}, err
	}
	if !hmac.Equal(buf[HelloSize:], proof(secret, "rpstream-rdma server", ch, sh)) {
		return Hello{}, fmt.Errorf("%w: listener does not know the secret", rdma.ErrAuth)
	}
	if _, err := rw.Write(proof(secret, "rpstream-rdma client", ch, sh)); err != nil {
		return Hello{}, fmt.Errorf("%w: send proof: %v", rdma.ErrHandshake, err)
	}
	var st [1]byte
	if _, err := io.ReadFull(rw, st[:]); err != nil || st[0] != StatusOK {
		return Hello{}, fmt.Errorf("%w: listener rejected our proof", rdma.ErrAuth)
	}
	return peer, nil
}

// Server runs the listener's side over rw and returns the dialer's Hello.
// On error the caller must close the transport without sending more.
func Server(rw io.ReadWriter, secret []byte, mine Hello) (Hello, error) {
	ch := make([]byte, HelloSize)
	if _, err := io.ReadFull(rw, ch); err != nil {
		return Hello{}, fmt.Errorf("%w: no hello from dialer: %v", rdma.ErrHandshake, err)
	}
	peer, perr := ParseHello(ch)
	if perr != nil && peer.Version == 0 {
		return Hello{}, perr
	}
	sh := mine.Marshal()
	if _, err := rw.Write(append(bytes.Clone(sh), proof(secret, "rpstream-rdma server", ch, sh)...)); err != nil {
		return Hello{}, fmt.Errorf("%w: send hello: %v", rdma.ErrHandshake, err)
	}
	if perr != nil {
		return Hello{}, perr
	}
	got := make([]byte, ProofSize)
	if _, err := io.ReadFull(rw, got); err != nil {
		return Hello{}, fmt.Errorf("%w: no proof from dialer: %v", rdma.ErrAuth, err)
	}
	if !hmac.Equal(got, proof(secret, "rpstream-rdma client", ch, sh)) {
		return Hello{}, fmt.Errorf("%w: dialer does not know the secret", rdma.ErrAuth)
	}
	if _, err := rw.Write([]byte{StatusOK}); err != nil {
		return Hello{}, fmt.Errorf("%w: send status: %v", rdma.ErrHandshake, err)
	}
	return peer, nil
}
