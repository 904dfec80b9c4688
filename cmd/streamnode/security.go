package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rpstream/rpstream/acl"
	"github.com/rpstream/rpstream/pki"
)

// security is a node's TLS material and ACL, reloaded on SIGHUP.
type security struct {
	cfg  Config
	keys *pki.Keys // nil: TLS off
	acl  atomic.Pointer[acl.ACL]
}

// loadSecurity reads the TLS files and the ACL cfg names.
func loadSecurity(cfg Config) (*security, error) {
	s := &security{cfg: cfg}
	if cfg.TLSCert != "" {
		k, err := pki.Load(pki.Files{CA: cfg.TLSCA, Cert: cfg.TLSCert, Key: cfg.TLSKey})
		if err != nil {
			return nil, err
		}
		if name, ok := nodeURIName(k); !ok || name != cfg.Name {
			return nil, fmt.Errorf("%w: the certificate %s names node %q (URI %s%s), not this node %q", pki.ErrConfig, cfg.TLSCert, name, pki.NodeURIPrefix, name, cfg.Name)
		}
		s.keys = k
	}
	if cfg.ACL != "" {
		a, err := acl.Load(cfg.ACL)
		if err != nil {
			return nil, err
		}
		s.acl.Store(a)
	}
	return s, nil
}

func nodeURIName(k *pki.Keys) (string, bool) {
	for _, u := range k.Leaf().URIs {
		if n, ok := strings.CutPrefix(u.String(), pki.NodeURIPrefix); ok {
			return n, true
		}
	}
	return "", false
}

// reload reads the files again; what fails to load keeps the old.
func (s *security) reload(log *slog.Logger) {
	if s.keys != nil {
		if err := s.keys.Reload(); err != nil {
			log.Error("SIGHUP: TLS files not reloaded; the certificate in use stays", "err", err)
		} else {
			leaf := s.keys.Leaf()
			log.Info("SIGHUP: TLS files reloaded", "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter.Format(time.RFC3339))
		}
	}
	if s.cfg.ACL != "" {
		if a, err := acl.Load(s.cfg.ACL); err != nil {
			log.Error("SIGHUP: ACL not reloaded; the ACL in use stays", "err", err)
		} else {
			s.acl.Store(a)
			log.Info("SIGHUP: ACL reloaded", "file", s.cfg.ACL)
		}
	}
}

// watchHUP reloads on every SIGHUP until stop is closed; the returned
// channel is closed when it has stopped.
func (s *security) watchHUP(log *slog.Logger, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer close(done)
		defer signal.Stop(hup)
		for {
			select {
			case <-stop:
				return
			case <-hup:
				s.reload(log)
			}
		}
	}()
	return done
}

// devCA is `streamnode dev-ca`: it writes a development CA and
// certificates for the nodes and clients named (package pki, WriteDevSet).
func devCA(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("streamnode dev-ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "rpstream-tls", "directory to write ca.crt, ca.key, NAME.crt and NAME.key into (an existing CA there is reused)")
	nodes := fs.String("nodes", "", "node member names, NAME[,NAME...]: a node certificate each")
	clients := fs.String("clients", "", "client identities, NAME[,NAME...]: a client certificate each")
	hosts := fs.String("hosts", "", "more DNS names or IP addresses clients reach the nodes at, HOST[,HOST...] (every node certificate names its member name, localhost, 127.0.0.1 and ::1)")
	validity := fs.Duration("validity", 30*24*time.Hour, "how long the certificates are valid")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: streamnode dev-ca --dir DIR --nodes n1,n2,n3 [--clients admin,app] [--hosts HOST,...]\n\n"+
			"Writes a development CA and certificates signed by it. Not for production: the CA's key lies beside them.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "streamnode dev-ca: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	set := pki.DevSet{Dir: *dir, Nodes: splitList(*nodes), Clients: splitList(*clients), Hosts: splitList(*hosts), Validity: *validity}
	if len(set.Nodes) == 0 && len(set.Clients) == 0 {
		fmt.Fprintln(stderr, "streamnode dev-ca: name --nodes or --clients")
		return 2
	}
	if err := pki.WriteDevSet(set); err != nil {
		fmt.Fprintf(stderr, "streamnode dev-ca: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote a development CA and %d certificates into %s\n", len(set.Nodes)+len(set.Clients), *dir)
	return 0
}

func splitList(v string) []string {
	var out []string
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
