package acl_test

import (
	"errors"
	"testing"

	"github.com/rpstream/rpstream/acl"
)

func TestAllowed(t *testing.T) {
	a, err := acl.Parse([]byte(`{
		"tokens": [{"identity": "billing", "sha256": "` + acl.HashToken("s3cret") + `"}],
		"grants": [
			{"identity": "billing", "streams": ["orders", "orders.*"], "permissions": ["read", "append"]},
			{"identity": "ops", "streams": ["*"], "permissions": ["admin"]},
			{"identity": "*", "streams": ["public.*"], "permissions": ["read"]}
		]}`))
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := a.TokenIdentity("s3cret"); !ok || id != "billing" {
		t.Fatalf("token: %q %v", id, ok)
	}
	if _, ok := a.TokenIdentity("s3cret\n"); ok {
		t.Fatal("a different token was accepted")
	}
	for _, c := range []struct {
		id, stream string
		p          acl.Perm
		want       bool
	}{
		{"billing", "orders", acl.Read, true},
		{"billing", "orders.eu", acl.Append, true},
		{"billing", "orders", acl.Admin, false},
		{"billing", "ordersX", acl.Read, false},
		{"billing", "public.news", acl.Read, true},
		{"billing", "public.news", acl.Append, false},
		{"ops", "anything", acl.Admin, true},
		{"ops", "anything", acl.Read, false},
		{"nobody", "public.x", acl.Read, true},
		{"nobody", "orders", acl.Read, false},
	} {
		if got := a.Allowed(c.id, c.stream, c.p); got != c.want {
			t.Errorf("Allowed(%s, %s, %v) = %v, want %v", c.id, c.stream, c.p, got, c.want)
		}
	}
	if !a.AllowedEverywhere("ops", acl.Admin) || a.AllowedEverywhere("billing", acl.Admin) {
		t.Fatal("AllowedEverywhere")
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{
		`{`,
		`{"grants": [{"identity": "a", "streams": ["x"], "permissions": ["write"]}]}`,
		`{"grants": [{"identity": "a", "streams": ["[x"], "permissions": ["read"]}]}`,
		`{"grants": [{"identity": "", "streams": ["x"], "permissions": ["read"]}]}`,
		`{"tokens": [{"identity": "a", "sha256": "zz"}]}`,
		`{"unknown": 1}`,
	} {
		if _, err := acl.Parse([]byte(s)); !errors.Is(err, acl.ErrInvalid) {
			t.Errorf("Parse(%s): %v, want ErrInvalid", s, err)
		}
	}
}
