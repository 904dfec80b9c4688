package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultPort is the port of a node's client address when an address
// names none: streamnode's default --client-addr is 127.0.0.1:7420.
const DefaultPort = 7420

// WithDefaultPort returns addr with DefaultPort added when it names a
// host only: "10.0.0.1" becomes "10.0.0.1:7420", "::1" and "[::1]"
// become "[::1]:7420", "node1" "node1:7420". An address with a port, or
// one that is not a host at all, is returned as it is (gRPC then says
// what is wrong with it).
func WithDefaultPort(addr string) string {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return addr
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	host := addr
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil {
			return addr // neither HOST:PORT nor an IPv6 address
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(DefaultPort))
}

// Errors of Probe, matched with errors.Is; the error's message names the
// address and says what was found there in plain words.
var (
	// ErrNoNode is returned when nothing accepts a connection at the
	// address (connection refused, no such host, no route).
	ErrNoNode = errors.New("client: no rpstream node at the address")
	// ErrNotRPStream is returned when something accepts connections at
	// the address but does not answer as a node does (an HTTP/1 server,
	// another protocol, a server that wants TLS from a plaintext client).
	ErrNotRPStream = errors.New("client: the address does not speak the rpstream protocol")
	// ErrTLSRefused is returned when a TLS server at the address
	// completed the handshake and then closed the connection with an
	// alert: TLS 1.3 refuses a client certificate so (one of another CA,
	// expired, or none where one is required).
	ErrTLSRefused = errors.New("client: the address refused this client's TLS credentials")
	// ErrNoAnswer is returned when the address accepted a connection but
	// sent nothing within the probe's time: a node that is hung, or a
	// server that waits for its client to speak first. Nothing is known.
	ErrNoAnswer = errors.New("client: no answer from the address")
)

// probeError is an error of Probe: one of its sentinels and the words.
type probeError struct {
	kind error
	msg  string
	err  error // the network error, if any
}

func (e *probeError) Error() string { return e.msg }
func (e *probeError) Is(target error) bool {
	return target == e.kind
}
func (e *probeError) Unwrap() error { return e.err }

// probeTimeout bounds a probe whose context has no earlier deadline.
const probeTimeout = 3 * time.Second

// h2Preface is what an HTTP/2 client sends first (RFC 9113, 3.4),
// followed here by an empty SETTINGS frame.
var h2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// Probe checks, in one connection and within ctx (at most 3 s), that a
// node's client service answers at addr (HOST:PORT), so that a wrong
// address is reported at once and in plain words instead of as gRPC's
// transport errors once every retry has failed. It returns nil when addr
// answers the HTTP/2 connection preface with a SETTINGS frame, as a gRPC
// server does; ErrNoNode when the connection is refused or the host
// cannot be reached; ErrNotRPStream when something else answers there;
// ErrTLSRefused when a TLS server refuses the client's certificate;
// ErrNoAnswer when nothing answered in time (inconclusive). tlsConfig,
// if not nil, is used to speak TLS first (NextProtos h2), as a Client
// dialled with TLS credentials does.
func Probe(ctx context.Context, addr string, tlsConfig *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return &probeError{ErrNoAnswer, fmt.Sprintf("no answer from %s: the connection was not accepted within %v", addr, probeTimeout), err}
		}
		return &probeError{ErrNoNode, fmt.Sprintf("no rpstream node at %s: %s", addr, dialReason(err)), err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if tlsConfig != nil {
		cfg := tlsConfig.Clone()
		cfg.NextProtos = []string{"h2"}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			if isTimeout(err) {
				return &probeError{ErrNoAnswer, fmt.Sprintf("no answer from %s: no TLS handshake within %v", addr, probeTimeout), err}
			}
			return &probeError{ErrNotRPStream, fmt.Sprintf("TLS handshake with %s failed: %v", addr, err), err}
		}
		conn = tc
	}
	if _, err := conn.Write(h2Preface); err != nil {
		return &probeError{ErrNotRPStream, fmt.Sprintf("%s does not speak the rpstream protocol: it closed the connection (%v)", addr, err), err}
	}
	// A gRPC server sends its SETTINGS frame at once: a 9-byte frame
	// header of type 4 on stream 0.
	var hdr [9]byte
	n, err := io.ReadFull(conn, hdr[:])
	if n == len(hdr) && hdr[3] == 4 && hdr[4]&1 == 0 && bytes.Equal(hdr[5:9], []byte{0, 0, 0, 0}) {
		return nil
	}
	if n == 0 && isTimeout(err) {
		return &probeError{ErrNoAnswer, fmt.Sprintf("no answer from %s within %v: a node that is hung, or a server that is not a node", addr, probeTimeout), err}
	}
	if n == 0 && tlsConfig != nil && err != nil && !errors.Is(err, io.EOF) {
		return &probeError{ErrTLSRefused, fmt.Sprintf("%s refused the TLS connection after the handshake: %v (is the client certificate one its CA issued, and valid?)", addr, err), err}
	}
	return &probeError{ErrNotRPStream, fmt.Sprintf("%s does not speak the rpstream protocol: %s", addr, describeAnswer(hdr[:n], conn, tlsConfig != nil)), err}
}

// describeAnswer says what the first bytes a server sent look like.
func describeAnswer(first []byte, conn net.Conn, tlsOn bool) string {
	switch {
	case len(first) == 0 && !tlsOn:
		return "it closed the connection without answering (as a server that wants TLS does with a plaintext client)"
	case len(first) == 0:
		return "it closed the connection without answering"
	case bytes.HasPrefix(first, []byte("HTTP/")):
		return "it answered as an HTTP/1 server"
	case first[0] == '<':
		return "it answered with HTML, as a web server does"
	case first[0] == 0x15 || first[0] == 0x16:
		return "it answered with TLS"
	case first[0] == 'S' && bytes.HasPrefix(first, []byte("SSH-")):
		return "it answered as an SSH server"
	case len(first) >= 4 && first[3] != 4:
		// An HTTP/2 frame, but not SETTINGS (or text that is not HTTP).
		if isText(first) {
			return fmt.Sprintf("it answered %q", first)
		}
		return "it answered with bytes that are not an HTTP/2 settings frame"
	}
	if isText(first) {
		return fmt.Sprintf("it answered %q", first)
	}
	return "it answered with bytes that are not an HTTP/2 settings frame"
}

func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\r' && c != '\n' && c != '\t' || c > 0x7e {
			return false
		}
	}
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialReason is why a connection could not be made, in words.
func dialReason(err error) string {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (nothing listens on that port)"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.As(err, &dns):
		return "no such host " + strconv.Quote(dns.Name)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
