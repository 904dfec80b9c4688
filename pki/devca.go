package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority able to issue node and client
// certificates: the development CA of `streamnode dev-ca`, and tests'.
// Production clusters use their own CA; what it must put in a node
// certificate is in the package comment.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// NewCA makes a self-signed CA named name (its subject's common name),
// valid for validity from now (less a minute, for clocks a little
// apart).
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"rpstream development"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}, nil
}

// LoadCA reads a CA written by WriteCA (its certificate and key files),
// to issue more certificates from it.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: CA %s, %s: %v", ErrConfig, certFile, keyFile, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: CA %s: %v", ErrConfig, certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: %s is not a CA certificate", ErrConfig, certFile)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: CA key %s cannot sign", ErrConfig, keyFile)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: signer}, nil
}

// KeyPEM is the CA's private key in PEM.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.key) }

// Request describes a certificate to issue.
type Request struct {
	// Name is the subject's common name: the member name of a node, the
	// identity of a client (pki.ClientName).
	Name string
	// Node makes a node certificate (NodeURI(Name) among its SANs), valid
	// for both ends of a TLS connection; otherwise a client certificate.
	Node bool
	// Hosts are the DNS names and IP addresses a node is reached at by
	// clients (they check the address they dial is among them).
	Hosts []string
	// Validity is how long the certificate is valid from now.
	Validity time.Duration
}

// Issue makes a certificate and key for r, both PEM.
func (ca *CA) Issue(r Request) (certPEM, keyPEMBytes []byte, err error) {
	if r.Name == "" {
		return nil, nil, fmt.Errorf("%w: a certificate needs a name", ErrConfig)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: r.Name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(r.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if r.Node {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		u, err := url.Parse(NodeURI(r.Name))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: node name %q: %v", ErrConfig, r.Name, err)
		}
		tmpl.URIs = []*url.URL{u}
		for _, h := range r.Hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if h != "" {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), kp, nil
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// DevSet describes the files WriteDevSet writes.
type DevSet struct {
	// Dir receives ca.crt and ca.key, NAME.crt and NAME.key per node and
	// per client. Keys are written 0600.
	Dir string
	// Nodes are member names; each node certificate also names Hosts
	// and the node's own name, localhost, 127.0.0.1 and ::1.
	Nodes []string
	Hosts []string
	// Clients are client identities (a client certificate each).
	Clients []string
	// Validity of every certificate; zero means 30 days.
	Validity time.Duration
}

// WriteDevSet makes a development CA in s.Dir and certificates from it,
// reusing the CA already there (ca.crt and ca.key), so that certificates
// added later are trusted by the nodes running. Nothing of it is fit for
// production: the CA key lies beside the certificates.
func WriteDevSet(s DevSet) error {
	if s.Validity == 0 {
		s.Validity = 30 * 24 * time.Hour
	}
	for _, n := range append(append([]string(nil), s.Nodes...), s.Clients...) {
		if err := checkFileName(n); err != nil {
			return err
		}
		if n == "ca" {
			return fmt.Errorf("%w: name %q is the CA's files", ErrConfig, n)
		}
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	caCert, caKey := filepath.Join(s.Dir, "ca.crt"), filepath.Join(s.Dir, "ca.key")
	var ca *CA
	if _, err := os.Stat(caKey); err == nil {
		if ca, err = LoadCA(caCert, caKey); err != nil {
			return err
		}
	} else {
		var err error
		if ca, err = NewCA("rpstream development CA", s.Validity); err != nil {
			return err
		}
		kp, err := ca.KeyPEM()
		if err != nil {
			return err
		}
		if err := os.WriteFile(caKey, kp, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(caCert, ca.CertPEM, 0o644); err != nil {
			return err
		}
	}
	write := func(r Request) error {
		c, k, err := ca.Issue(r)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.Dir, r.Name+".key"), k, 0o600); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(s.Dir, r.Name+".crt"), c, 0o644)
	}
	for _, n := range s.Nodes {
		hosts := append([]string{n, "localhost", "127.0.0.1", "::1"}, s.Hosts...)
		if err := write(Request{Name: n, Node: true, Hosts: hosts, Validity: s.Validity}); err != nil {
			return err
		}
	}
	for _, n := range s.Clients {
		if err := write(Request{Name: n, Validity: s.Validity}); err != nil {
			return err
		}
	}
	return nil
}

// WriteFiles issues a certificate for r and writes it, its key and the
// CA's certificate into dir as NAME.crt, NAME.key and ca.crt; it returns
// their names, ready for Load.
func (ca *CA) WriteFiles(dir string, r Request) (Files, error) {
	if err := checkFileName(r.Name); err != nil {
		return Files{}, err
	}
	c, k, err := ca.Issue(r)
	if err != nil {
		return Files{}, err
	}
	f := Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, r.Name+".crt"), Key: filepath.Join(dir, r.Name+".key")}
	if err := os.WriteFile(f.CA, ca.CertPEM, 0o644); err != nil {
		return Files{}, err
	}
	if err := os.WriteFile(f.Key, k, 0o600); err != nil {
		return Files{}, err
	}
	return f, os.WriteFile(f.Cert, c, 0o644)
}

// checkFileName refuses names that are not plain file names.
func checkFileName(n string) error {
	if n == "" || len(n) > 64 || n[0] == '.' {
		return fmt.Errorf("%w: name %q: want 1 to 64 of [A-Za-z0-9._-], not starting with a dot", ErrConfig, n)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: name %q: want [A-Za-z0-9._-]", ErrConfig, n)
		}
	}
	return nil
}
