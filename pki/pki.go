// Package pki holds the TLS material of a node and of a client: the
// certificate and key a node presents, the CA it trusts, reloaded from
// their files on demand (SIGHUP in streamnode), and the tls.Configs built
// from them for the three kinds of connection rpstream makes:
//
//   - the client port (Keys.ServerConfig): TLS 1.3; a client certificate
//     is verified against the CA when the client presents one (a client
//     may instead authenticate with a bearer token); the Control service
//     on the same port requires a node certificate (NodeName);
//   - node to node (Keys.PeerConfig): mutual TLS 1.3, both sides present
//     a node certificate issued by the CA; used by the catalog's Control
//     transport and by the rdma tcp provider;
//   - a client of the client port (ClientConfig): verifies the node's
//     certificate against the CA and the address's host name, and
//     presents a client certificate when given one.
//
// A node certificate is one whose SANs hold the URI rpstream://node/NAME
// (NodeURI): the CA may also sign client certificates, and those must not
// pass for a node. Node-to-node connections check the chain against the
// CA and that URI, not a host name: nodes reach each other at addresses
// learnt by gossip, and their identity is their member name.
//
// Keys swaps its material atomically: connections made after Reload use
// the new certificate and CA; established ones keep theirs.
package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// ErrConfig is returned for unusable TLS files or settings.
var ErrConfig = errors.New("pki: invalid TLS configuration")

// NodeURIPrefix starts the URI SAN of a node certificate; the member name
// follows it. It must never change: certificates in the field carry it.
const NodeURIPrefix = "rpstream://node/"

// NodeURI is the URI SAN of member name's certificate.
func NodeURI(name string) string { return NodeURIPrefix + name }

// Files names the PEM files of a node's TLS material.
type Files struct {
	// CA holds the certificates of the authorities trusted for peers and
	// clients (one or more PEM blocks).
	CA string
	// Cert holds this side's certificate (and its intermediates), Key its
	// private key.
	Cert string
	Key  string
}

// Validate reports a missing file name.
func (f Files) Validate() error {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return fmt.Errorf("%w: need the CA, certificate and key files (--tls-ca, --tls-cert, --tls-key); have %q, %q, %q", ErrConfig, f.CA, f.Cert, f.Key)
	}
	return nil
}

// Keys is a node's TLS material, reloadable. Its configs read the
// material current at each handshake.
type Keys struct {
	files Files
	cur   atomic.Pointer[material]
}

// material is one loaded generation of the files, with the configs made
// from it.
type material struct {
	cert   *tls.Certificate
	leaf   *x509.Certificate
	pool   *x509.CertPool
	server *tls.Config // client port
	peerIn *tls.Config // node-to-node, accepting side
}

// Load reads f and returns the Keys; the certificate must be valid for
// the key and issued by a CA in f.CA.
func Load(f Files) (*Keys, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	k := &Keys{files: f}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload reads the files again and, if they are usable, makes them
// current; on an error the material in use stays.
func (k *Keys) Reload() error {
	m, err := loadMaterial(k.files)
	if err != nil {
		return err
	}
	k.cur.Store(m)
	return nil
}

// Leaf is the certificate presented now.
func (k *Keys) Leaf() *x509.Certificate { return k.cur.Load().leaf }

func loadMaterial(f Files) (*material, error) {
	pool, err := LoadPool(f.CA)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate %s and key %s: %v", ErrConfig, f.Cert, f.Key, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: certificate %s: %v", ErrConfig, f.Cert, err)
	}
	cert.Leaf = leaf
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: certificate %s is not issued by the CA in %s: %v", ErrConfig, f.Cert, f.CA, err)
	}
	m := &material{cert: &cert, leaf: leaf, pool: pool}
	m.server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		// Clients may authenticate by a token instead; a certificate
		// given must verify.
		ClientAuth: tls.VerifyClientCertIfGiven,
		NextProtos: []string{"h2"},
	}
	m.peerIn = &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Replication streams bulk data: full-size records from the
		// first byte (Go otherwise starts with small ones after idle).
		DynamicRecordSizingDisabled: true,
		Certificates:                []tls.Certificate{cert},
		ClientCAs:                   pool,
		ClientAuth:                  tls.RequireAndVerifyClientCert,
		VerifyConnection:            requireNode,
	}
	return m, nil
}

// LoadPool reads the PEM certificates of path into a pool.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: CA file: %v", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: CA file %s: %v", ErrConfig, path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrConfig, path)
	}
	return pool, nil
}

// ServerConfig is the config of the client port's listener.
func (k *Keys) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return k.cur.Load().server, nil
		},
	}
}

// PeerConfig is the config of node-to-node connections, for both the
// dialling side (tls.Client, gRPC) and the accepting side (tls.Server).
// Each side presents its node certificate and requires the other's: a
// chain to the CA and a NodeURI SAN. No host name is checked (see the
// package comment).
func (k *Keys) PeerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:                  tls.VersionTLS13,
		DynamicRecordSizingDisabled: true, // as peerIn
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return k.cur.Load().peerIn, nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return k.cur.Load().cert, nil
		},
		// The chain is verified in VerifyConnection, against the CA
		// current at the handshake, without a host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("pki: the peer presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: k.cur.Load().pool, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("pki: the peer's certificate is not from this cluster's CA: %w", err)
			}
			if _, ok := nodeName(cs.PeerCertificates[0]); !ok {
				return fmt.Errorf("pki: the peer's certificate (%s) is not a node certificate (no %s URI)", cs.PeerCertificates[0].Subject, NodeURIPrefix)
			}
			return nil
		},
	}
}

// requireNode is the accepting side's check that the verified client
// certificate is a node's.
func requireNode(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return errors.New("pki: the peer presented no verified certificate")
	}
	if _, ok := nodeName(cs.VerifiedChains[0][0]); !ok {
		return fmt.Errorf("pki: the peer's certificate (%s) is not a node certificate (no %s URI)", cs.VerifiedChains[0][0].Subject, NodeURIPrefix)
	}
	return nil
}

// NodeName is the member name in the verified node certificate of a
// connection's peer; false if the peer presented none.
func NodeName(cs tls.ConnectionState) (string, bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	return nodeName(cs.VerifiedChains[0][0])
}

func nodeName(c *x509.Certificate) (string, bool) {
	for _, u := range c.URIs {
		if s := u.String(); strings.HasPrefix(s, NodeURIPrefix) && len(s) > len(NodeURIPrefix) {
			return s[len(NodeURIPrefix):], true
		}
	}
	return "", false
}

// ClientName is the identity of a connection's peer by its verified
// certificate: the subject's common name, else its first DNS name; false
// if the peer presented no verified certificate or it names nobody.
func ClientName(cs tls.ConnectionState) (string, bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	c := cs.VerifiedChains[0][0]
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName, true
	}
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0], true
	}
	return "", false
}

// ClientConfig is the config of a client of the client port: it trusts
// the CA in caFile (empty: the system's roots) and presents the
// certificate in certFile and keyFile if they are given (both or
// neither). The node's address must be among its certificate's names.
func ClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if caFile != "" {
		pool, err := LoadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: a client certificate needs both the certificate and the key file", ErrConfig)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate %s and key %s: %v", ErrConfig, certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
