package node

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/acl"
	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/pki"
)

// Authentication and authorisation of the client service (Config.ACL).
//
// A caller is identified by a bearer token (metadata "authorization:
// Bearer TOKEN", which the ACL maps to an identity) or else by the
// client certificate it presented on the TLS connection (its name,
// pki.ClientName). A call without either is refused with
// Unauthenticated, a call the ACL does not allow with PermissionDenied;
// both are logged, at most a few lines a second (a summary counts the
// rest). Each method of the Streams service needs one permission on the
// stream its request names (methodNeeds); a streaming call's every
// request is checked. Methods of other services (Control, which checks
// node certificates itself; health and reflection, which reveal no data)
// are not checked here.

// need is what a method of the Streams service requires.
type need struct {
	perm acl.Perm
	// scope: a stream named by the request, every stream (a grant on
	// "*"), or only an identity.
	scope scope
}

type scope uint8

const (
	scopeStream scope = iota
	scopeAll
	scopeIdentity
)

// methodNeeds maps each method of the Streams service to what it needs.
// A method missing here (a new one) is refused until it is added.
var methodNeeds = map[string]need{
	api.Streams_CreateStream_FullMethodName:  {acl.Admin, scopeStream},
	api.Streams_DeleteStream_FullMethodName:  {acl.Admin, scopeStream},
	api.Streams_Append_FullMethodName:        {acl.Append, scopeStream},
	api.Streams_AppendStream_FullMethodName:  {acl.Append, scopeStream},
	api.Streams_Read_FullMethodName:          {acl.Read, scopeStream},
	api.Streams_Tail_FullMethodName:          {acl.Read, scopeStream},
	api.Streams_StreamStatus_FullMethodName:  {acl.Read, scopeStream},
	api.Streams_ListStreams_FullMethodName:   {0, scopeIdentity}, // filtered to the streams one may read
	api.Streams_Members_FullMethodName:       {0, scopeIdentity},
	api.Streams_ClusterStatus_FullMethodName: {0, scopeIdentity},
	api.Streams_ChangeVoter_FullMethodName:   {acl.Admin, scopeAll},
}

// streamsPrefix starts the full method names of the Streams service.
const streamsPrefix = "/rpstream.api.v1.Streams/"

// streamRequest is every request that names a stream.
type streamRequest interface{ GetStream() string }

// authorizer holds the interceptors' state.
type authorizer struct {
	acl func() *acl.ACL
	log *deniedLog
}

// identify returns the caller's identity.
func (a *authorizer) identify(ctx context.Context, rules *acl.ACL) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) > 0 {
		tok, ok := strings.CutPrefix(vals[0], "Bearer ")
		if !ok || len(vals) > 1 {
			return "", status.Error(codes.Unauthenticated, "authorization: want one \"Bearer TOKEN\"")
		}
		id, ok := rules.TokenIdentity(strings.TrimSpace(tok))
		if !ok {
			return "", status.Error(codes.Unauthenticated, "the bearer token is not in this cluster's ACL")
		}
		return id, nil
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			if id, ok := pki.ClientName(ti.State); ok {
				return id, nil
			}
		}
	}
	return "", status.Error(codes.Unauthenticated, "no credentials: this cluster requires a bearer token (--token-file) or a client certificate (--tls-cert)")
}

// check authorises one request of method; req is nil for a streaming
// call's opening (its requests are checked as they arrive).
func (a *authorizer) check(ctx context.Context, method string, req any) (string, error) {
	rules := a.acl()
	n, known := methodNeeds[method]
	id, err := a.identify(ctx, rules)
	if err != nil {
		a.log.denied(ctx, method, "", "", err)
		return "", err
	}
	if !known {
		err := status.Errorf(codes.PermissionDenied, "%s: no permission is defined for this method", method)
		a.log.denied(ctx, method, id, "", err)
		return "", err
	}
	switch n.scope {
	case scopeIdentity:
		return id, nil
	case scopeAll:
		if rules.AllowedEverywhere(id, n.perm) {
			return id, nil
		}
		err := status.Errorf(codes.PermissionDenied, "%s may not %s: it needs %s on every stream (\"*\")", id, methodName(method), n.perm)
		a.log.denied(ctx, method, id, "*", err)
		return "", err
	}
	if req == nil {
		return id, nil
	}
	sr, ok := req.(streamRequest)
	if !ok {
		return "", status.Errorf(codes.Internal, "%s: request names no stream", method)
	}
	if rules.Allowed(id, sr.GetStream(), n.perm) {
		return id, nil
	}
	err = status.Errorf(codes.PermissionDenied, "%s may not %s stream %q: it needs %s", id, methodName(method), sr.GetStream(), n.perm)
	a.log.denied(ctx, method, id, sr.GetStream(), err)
	return "", err
}

func methodName(full string) string { return full[strings.LastIndexByte(full, '/')+1:] }

func (a *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, streamsPrefix) {
		return handler(ctx, req)
	}
	id, err := a.check(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	resp, err := handler(ctx, req)
	if ls, ok := resp.(*api.ListStreamsResponse); ok && err == nil {
		rules := a.acl()
		keep := ls.Streams[:0]
		for _, s := range ls.Streams {
			if rules.Allowed(id, s, acl.Read) || rules.Allowed(id, s, acl.Append) || rules.Allowed(id, s, acl.Admin) {
				keep = append(keep, s)
			}
		}
		ls.Streams = keep
	}
	return resp, err
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, streamsPrefix) {
		return handler(srv, ss)
	}
	id, err := a.check(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	return handler(srv, &checkedStream{ServerStream: ss, a: a, method: info.FullMethod, id: id})
}

// checkedStream checks each request of a streaming call as it arrives.
type checkedStream struct {
	grpc.ServerStream
	a      *authorizer
	method string
	id     string
}

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	_, err := s.a.check(s.Context(), s.method, m)
	return err
}

// deniedLog logs refused calls, at most burst lines per second; the
// lines dropped are counted in the next one.
type deniedLog struct {
	log *slog.Logger

	mu      sync.Mutex // guards the fields below
	window  time.Time
	lines   int
	dropped int
}

const deniedBurst = 5

// allow says whether a line may be logged now, and how many were
// dropped since the last one.
func (l *deniedLog) allow() (bool, int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.lines = now, 0
	}
	if l.lines >= deniedBurst {
		l.dropped++
		return false, 0
	}
	l.lines++
	dropped := l.dropped
	l.dropped = 0
	return true, dropped
}

func (l *deniedLog) denied(ctx context.Context, method, id, stream string, err error) {
	ok, dropped := l.allow()
	if !ok {
		return
	}
	from := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	l.log.Warn("call refused", "method", methodName(method), "identity", id, "stream", stream, "from", from,
		"code", status.Code(err).String(), "reason", status.Convert(err).Message(), "refusals_not_logged", dropped)
}

// loggedCreds logs the TLS handshakes the client port refuses (a
// plaintext client, an untrusted certificate), rate-limited like refused
// calls: gRPC itself only closes the connection.
type loggedCreds struct {
	credentials.TransportCredentials
	log *deniedLog
}

func (c loggedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.log.handshake(raw.RemoteAddr(), err)
	}
	return conn, info, err
}

func (c loggedCreds) Clone() credentials.TransportCredentials {
	return loggedCreds{c.TransportCredentials.Clone(), c.log}
}

func (l *deniedLog) handshake(from net.Addr, err error) {
	ok, dropped := l.allow()
	if !ok {
		return
	}
	l.log.Warn("TLS handshake refused", "from", from.String(), "err", err, "refusals_not_logged", dropped)
}
