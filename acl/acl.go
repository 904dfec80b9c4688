// Package acl is the access control of the client service: who a caller
// is (a bearer token or a client certificate's name) and what each
// identity may do to which streams.
//
// An ACL file is JSON:
//
//	{
//	  "tokens": [
//	    {"identity": "billing", "sha256": "<hex SHA-256 of the token>"}
//	  ],
//	  "grants": [
//	    {"identity": "billing", "streams": ["orders", "orders.*"], "permissions": ["read", "append"]},
//	    {"identity": "ops",     "streams": ["*"],                  "permissions": ["read", "append", "admin"]},
//	    {"identity": "*",       "streams": ["public.*"],           "permissions": ["read"]}
//	  ]
//	}
//
// tokens maps bearer tokens to identities; only their SHA-256 is kept, so
// the file holds no secret (the client's --token-file holds the token; a
// trailing newline in it is not part of the token). A client certificate
// issued by the cluster's CA names its identity by its subject's common
// name. grants give an identity (or "*": every authenticated identity)
// permissions on the streams whose names match a pattern (path.Match: *
// matches any run of characters, ? one, [a-z] a class). Permissions are
// read (Read, Tail, StreamStatus; ListStreams lists only the streams one
// may read), append (Append, AppendStream) and admin (CreateStream,
// DeleteStream); they do not imply each other. Changing the catalog's
// voters needs admin granted on the pattern "*" itself. Membership and
// cluster status need only an identity. Whatever no grant allows is
// denied.
package acl

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
)

// ErrInvalid is returned for an ACL file that does not parse or names
// unknown permissions.
var ErrInvalid = errors.New("acl: invalid ACL file")

// Perm is one permission on a stream.
type Perm uint8

const (
	Read Perm = 1 << iota
	Append
	Admin
)

func (p Perm) String() string {
	switch p {
	case Read:
		return "read"
	case Append:
		return "append"
	case Admin:
		return "admin"
	}
	return fmt.Sprintf("Perm(%d)", uint8(p))
}

// Any is the identity of a grant to every authenticated caller.
const Any = "*"

// File is the JSON form of an ACL file.
type File struct {
	Tokens []Token `json:"tokens"`
	Grants []Grant `json:"grants"`
}

// Token names the identity of a bearer token by the token's SHA-256.
type Token struct {
	Identity string `json:"identity"`
	SHA256   string `json:"sha256"`
}

// Grant gives Identity the Permissions on the streams matching Streams.
type Grant struct {
	Identity    string   `json:"identity"`
	Streams     []string `json:"streams"`
	Permissions []string `json:"permissions"`
}

// ACL is a parsed ACL file; it is immutable and safe for concurrent use.
type ACL struct {
	tokens map[[sha256.Size]byte]string
	grants map[string][]grant // by identity
}

type grant struct {
	patterns []string
	perms    Perm
}

// Load reads and parses the ACL file at path.
func Load(path string) (*ACL, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	a, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// Parse parses an ACL file's contents.
func Parse(b []byte) (*ACL, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	a := &ACL{tokens: map[[sha256.Size]byte]string{}, grants: map[string][]grant{}}
	for i, t := range f.Tokens {
		if t.Identity == "" || t.Identity == Any {
			return nil, fmt.Errorf("%w: token %d: identity %q: want a name", ErrInvalid, i, t.Identity)
		}
		h, err := hex.DecodeString(t.SHA256)
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("%w: token %d (%s): sha256 %q: want 64 hex digits", ErrInvalid, i, t.Identity, t.SHA256)
		}
		var k [sha256.Size]byte
		copy(k[:], h)
		if other, ok := a.tokens[k]; ok {
			return nil, fmt.Errorf("%w: token %d: the same token names %s and %s", ErrInvalid, i, other, t.Identity)
		}
		a.tokens[k] = t.Identity
	}
	for i, g := range f.Grants {
		if g.Identity == "" {
			return nil, fmt.Errorf("%w: grant %d: no identity", ErrInvalid, i)
		}
		if len(g.Streams) == 0 || len(g.Permissions) == 0 {
			return nil, fmt.Errorf("%w: grant %d (%s): want streams and permissions", ErrInvalid, i, g.Identity)
		}
		var gr grant
		for _, p := range g.Streams {
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("%w: grant %d (%s): stream pattern %q: %v", ErrInvalid, i, g.Identity, p, err)
			}
			gr.patterns = append(gr.patterns, p)
		}
		for _, p := range g.Permissions {
			switch strings.ToLower(p) {
			case "read":
				gr.perms |= Read
			case "append":
				gr.perms |= Append
			case "admin":
				gr.perms |= Admin
			default:
				return nil, fmt.Errorf("%w: grant %d (%s): permission %q: want read, append or admin", ErrInvalid, i, g.Identity, p)
			}
		}
		a.grants[g.Identity] = append(a.grants[g.Identity], gr)
	}
	return a, nil
}

// TokenIdentity is the identity of a bearer token; false for a token the
// file does not list.
func (a *ACL) TokenIdentity(token string) (string, bool) {
	id, ok := a.tokens[sha256.Sum256([]byte(token))]
	return id, ok
}

// Allowed says whether identity has perm on stream.
func (a *ACL) Allowed(identity, stream string, perm Perm) bool {
	return a.match(identity, perm, func(p string) bool {
		ok, _ := path.Match(p, stream)
		return ok
	}) || a.match(Any, perm, func(p string) bool {
		ok, _ := path.Match(p, stream)
		return ok
	})
}

// AllowedEverywhere says whether identity holds perm by a grant on the
// pattern "*" itself (what cluster-wide changes need).
func (a *ACL) AllowedEverywhere(identity string, perm Perm) bool {
	all := func(p string) bool { return p == "*" }
	return a.match(identity, perm, all) || a.match(Any, perm, all)
}

func (a *ACL) match(identity string, perm Perm, f func(pattern string) bool) bool {
	for _, g := range a.grants[identity] {
		if g.perms&perm == 0 {
			continue
		}
		for _, p := range g.patterns {
			if f(p) {
				return true
			}
		}
	}
	return false
}

// HashToken is the hex SHA-256 of a token, as the ACL file lists it.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}
