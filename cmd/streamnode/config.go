package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rpstream/rpstream/internal/validate"
	"github.com/rpstream/rpstream/local"
)

// Config is everything streamnode is configured by. Each setting comes,
// from lowest to highest precedence, from DefaultConfig, the JSON config
// file (--config or RPSTREAM_CONFIG, keys as in the json tags), the
// environment (RPSTREAM_ and the flag name in upper case with - as _) and
// the command line (--flag).
type Config struct {
	// Name is this member's name, unique in the cluster.
	Name string `json:"name"`
	// Data is the data directory: streams live in Data/streams.
	Data string `json:"data"`
	// ClientAddr is the gRPC address clients and streamcli --node use
	// (port 0: any free port, logged as "serving clients").
	ClientAddr string `json:"client_addr"`
	// PeerAddr is where leaders of other nodes write replicas (rdma and
	// its control messages).
	PeerAddr string `json:"peer_addr"`
	// GossipAddr is memberlist's address (TCP and UDP); Join lists the
	// gossip addresses of members to join (retried in the background
	// until one answers).
	GossipAddr string   `json:"gossip_addr"`
	Join       []string `json:"join"`
	// Role is node (leads and replicates streams) or backup (holds extra
	// copies only).
	Role string `json:"role"`
	// Secret is the cluster's shared secret: it authenticates rdma
	// connections between nodes and encrypts gossip. Every member must
	// have the same; empty means a built-in development secret (logged).
	// It comes from SecretFile, RPSTREAM_SECRET or the config file, never
	// from the command line (visible in ps): --secret is refused.
	Secret string `json:"secret"`
	// SecretFile names a file holding the secret (a trailing newline is
	// not part of it).
	SecretFile string `json:"secret_file"`
	// TLSCert and TLSKey are this node's certificate and key (PEM), TLSCA
	// the CA certificates it trusts for other nodes and for clients'
	// certificates. All three or none: with them the client port serves
	// TLS 1.3 only, nodes talk to each other over mutual TLS (Control
	// service and rdma tcp connections), and SIGHUP reloads them.
	TLSCert string `json:"tls_cert"`
	TLSKey  string `json:"tls_key"`
	TLSCA   string `json:"tls_ca"`
	// ACL names the ACL file (package acl): with it, clients must
	// authenticate (a bearer token or a client certificate) and may do
	// only what it grants. Needs TLS. SIGHUP reloads it.
	ACL string `json:"acl"`
	// RDMA is the rdma provider: auto (verbs when an RDMA device is
	// found, else tcp), tcp or verbs.
	RDMA string `json:"rdma"`
	// Mover is the data mover engine of local appends: auto, sync, cpu
	// or dsa.
	Mover string `json:"mover"`
	// Voters are the catalog's controller voters (the members of its Raft
	// group that vote), used when the group is first formed: every member
	// listed must be started with the same list; a member not listed
	// follows the catalog without voting. Empty: this node alone when it
	// joins nobody (a single node votes for itself); a node that joins an
	// existing cluster follows it. Three voters are usual, five allowed.
	// Later changes: streamcli cluster add-voter / remove-voter.
	Voters []string `json:"voters"`
	// CatalogTiming is the catalog's timing preset: default (100 ms Raft
	// ticks, elections after 1 s, node leases of 3 s) or loopback (20 ms,
	// 300 ms, 1 s: processes on one machine, as tests run them).
	CatalogTiming string `json:"catalog_timing"`
	// LeaseTTL overrides the preset's node lease: a stream's leader that
	// sends the controller no heartbeat for this long (it sends one every
	// quarter of it) is replaced. 0: the preset's.
	LeaseTTL Duration `json:"lease_ttl"`
	// ScrubEvery is how often the copies this node holds are read through
	// and their entries' checksums checked (a damaged copy is cut back
	// and rewritten by its leader); negative disables it. 0: 1m.
	ScrubEvery Duration `json:"scrub_every"`
	// RetentionEvery is how often the streams this node leads are
	// trimmed by their retention policy (negative: never; 0: 1s);
	// AckEvery how often consumers' acknowledgements gathered here are
	// committed to the catalog (0: 200ms).
	RetentionEvery Duration `json:"retention_every"`
	AckEvery       Duration `json:"ack_every"`
	// RegionSize is the region size of streams created without one.
	RegionSize int `json:"region_size"`
	// MaxOpenStreams is the most streams and copies the node keeps open
	// (node.Config.MaxOpenStreams); 0: as many as the process's file
	// descriptor limit fits.
	MaxOpenStreams int `json:"max_open_streams"`
	// IdleClose is how long a led stream stays open unused
	// (node.Config.IdleClose); 0: node.DefaultIdleClose; negative: never.
	IdleClose Duration `json:"idle_close"`
	// DrainTimeout bounds how long SIGTERM waits for calls in flight
	// before cutting them off.
	DrainTimeout Duration `json:"drain_timeout"`
	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel  string `json:"log_level"`
	LogFormat string `json:"log_format"`
	// AdminAddr, if set, is the HTTP admin listener's address (package
	// admin: /metrics, /healthz, /readyz); empty, the default, means no
	// listener and no metrics counted. Pprof adds /debug/pprof/ to it.
	AdminAddr string `json:"admin_addr"`
	Pprof     bool   `json:"pprof"`
}

// Duration is a time.Duration written as "10s" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// DefaultConfig is the configuration of streamnode started with no flags:
// a single node keeping its data in ./rpstream-node, serving clients on
// 127.0.0.1:7420.
func DefaultConfig() Config {
	name, err := os.Hostname()
	if err != nil || validateName(name) != nil {
		name = "node"
	}
	return Config{
		Name:          name,
		Data:          "rpstream-node",
		ClientAddr:    "127.0.0.1:7420",
		PeerAddr:      "127.0.0.1:7421",
		GossipAddr:    "127.0.0.1:7422",
		Role:          "node",
		RDMA:          "auto",
		Mover:         "auto",
		CatalogTiming: "default",
		RegionSize:    4 << 20,
		DrainTimeout:  Duration(10 * time.Second),
		LogLevel:      "info",
		LogFormat:     "text",
	}
}

// validateName checks a member name by the rule of every name in the
// catalog (validate.Name): a name the catalog would refuse fails here,
// before anything starts.
func validateName(n string) error {
	if err := validate.Name(n); err != nil {
		return fmt.Errorf("name %w", err)
	}
	return nil
}

func validateAddr(what, a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%s %q: want HOST:PORT: %v", what, a, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%s %q: bad port", what, a)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%s %q: bad host", what, a)
	}
	return nil
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	if err := validateName(c.Name); err != nil {
		return err
	}
	if c.Data == "" {
		return errors.New("data: empty")
	}
	for _, a := range []struct{ what, addr string }{{"client-addr", c.ClientAddr}, {"peer-addr", c.PeerAddr}, {"gossip-addr", c.GossipAddr}} {
		if err := validateAddr(a.what, a.addr); err != nil {
			return err
		}
	}
	seen := map[string]string{}
	for _, a := range []struct{ what, addr string }{{"client-addr", c.ClientAddr}, {"peer-addr", c.PeerAddr}, {"gossip-addr", c.GossipAddr}} {
		if _, port, _ := net.SplitHostPort(a.addr); port == "0" {
			continue
		}
		if other, ok := seen[a.addr]; ok {
			return fmt.Errorf("%s and %s are both %s", other, a.what, a.addr)
		}
		seen[a.addr] = a.what
	}
	for _, j := range c.Join {
		if err := validateAddr("join", j); err != nil {
			return err
		}
	}
	if len(c.Voters) > 7 {
		return fmt.Errorf("voters: %d named; at most 7 (3 or 5 are usual)", len(c.Voters))
	}
	for _, v := range c.Voters {
		if err := validateName(v); err != nil {
			return fmt.Errorf("voters: %w", err)
		}
	}
	if c.LeaseTTL != 0 && (time.Duration(c.LeaseTTL) < 100*time.Millisecond || time.Duration(c.LeaseTTL) > 10*time.Minute) {
		return fmt.Errorf("lease-ttl %v: want 100ms to 10m (0: the catalog timing's)", time.Duration(c.LeaseTTL))
	}
	if c.CatalogTiming != "default" && c.CatalogTiming != "loopback" {
		return fmt.Errorf("catalog-timing %q: want default or loopback", c.CatalogTiming)
	}
	if c.Role != "node" && c.Role != "backup" {
		return fmt.Errorf("role %q: want node or backup", c.Role)
	}
	switch c.RDMA {
	case "auto", "tcp", "verbs":
	default:
		return fmt.Errorf("rdma %q: want auto, tcp or verbs", c.RDMA)
	}
	switch c.Mover {
	case "auto", "sync", "cpu", "dsa":
	default:
		return fmt.Errorf("mover %q: want auto, sync, cpu or dsa", c.Mover)
	}
	if (c.TLSCert != "" || c.TLSKey != "" || c.TLSCA != "") && (c.TLSCert == "" || c.TLSKey == "" || c.TLSCA == "") {
		return errors.New("tls: --tls-cert, --tls-key and --tls-ca go together")
	}
	if c.ACL != "" && c.TLSCert == "" {
		return errors.New("acl: an ACL needs TLS (--tls-cert, --tls-key, --tls-ca): tokens and client certificates would cross the network in clear")
	}
	if c.Secret != "" && len(c.Secret) < 16 {
		return fmt.Errorf("secret: want at least 16 bytes, have %d", len(c.Secret))
	}
	if c.RegionSize == 0 || (local.Options{RegionSize: c.RegionSize}).Validate() != nil {
		return fmt.Errorf("region-size %s: want a multiple of 4KiB from 16KiB to 1GiB, such as 4MiB", validate.FormatSize(int64(c.RegionSize)))
	}
	if c.DrainTimeout <= 0 {
		return fmt.Errorf("drain-timeout %v: want more than 0", time.Duration(c.DrainTimeout))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log-format %q: want text or json", c.LogFormat)
	}
	if c.AdminAddr != "" {
		if err := validateAddr("admin-addr", c.AdminAddr); err != nil {
			return err
		}
		for _, a := range []struct{ what, addr string }{{"client-addr", c.ClientAddr}, {"peer-addr", c.PeerAddr}, {"gossip-addr", c.GossipAddr}} {
			if _, port, _ := net.SplitHostPort(a.addr); a.addr == c.AdminAddr && port != "0" {
				return fmt.Errorf("%s and admin-addr are both %s", a.what, a.addr)
			}
		}
	} else if c.Pprof {
		return errors.New("pprof: needs --admin-addr (pprof is served on the admin listener)")
	}
	return nil
}

// setting is one setting settable by flag and environment.
type setting struct {
	name  string // flag name; env is RPSTREAM_ + upper(name) with - as _
	usage string
	set   func(c *Config, v string) error
}

// boolSettings may be given without a value, which means true (--pprof).
var boolSettings = map[string]bool{"pprof": true}

// boolValue is a string flag that may be given without a value, which
// means "true".
type boolValue struct{ v *string }

func (b boolValue) String() string {
	if b.v == nil {
		return ""
	}
	return *b.v
}
func (b boolValue) Set(s string) error { *b.v = s; return nil }
func (b boolValue) IsBoolFlag() bool   { return true }

func str(p func(c *Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *p(c) = v; return nil }
}

var settings = []setting{
	{"name", "member name, unique in the cluster", str(func(c *Config) *string { return &c.Name })},
	{"data", "data directory", str(func(c *Config) *string { return &c.Data })},
	{"client-addr", "gRPC address for clients, HOST:PORT", str(func(c *Config) *string { return &c.ClientAddr })},
	{"peer-addr", "address for peers (control and rdma), HOST:PORT", str(func(c *Config) *string { return &c.PeerAddr })},
	{"gossip-addr", "memberlist address, HOST:PORT", str(func(c *Config) *string { return &c.GossipAddr })},
	{"join", "gossip addresses of members to join, HOST:PORT[,HOST:PORT...]", func(c *Config, v string) error {
		c.Join = nil
		for _, j := range strings.Split(v, ",") {
			if j = strings.TrimSpace(j); j != "" {
				c.Join = append(c.Join, j)
			}
		}
		return nil
	}},
	{"role", "node or backup", str(func(c *Config) *string { return &c.Role })},
	{"voters", "catalog controller voters when the cluster is first formed, NAME[,NAME...] (every one started with the same list); empty: this node alone, or follow the cluster it joins", func(c *Config, v string) error {
		c.Voters = nil
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				c.Voters = append(c.Voters, n)
			}
		}
		return nil
	}},
	{"catalog-timing", "catalog timing preset: default (leases of 3s) or loopback (1s)", str(func(c *Config) *string { return &c.CatalogTiming })},
	{"scrub-every", "how often the copies held here are read through and checked (negative: never; 0: 1m)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		c.ScrubEvery = Duration(d)
		return err
	}},
	{"retention-every", "how often streams led here are trimmed by their retention policy (negative: never; 0: 1s)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		c.RetentionEvery = Duration(d)
		return err
	}},
	{"ack-every", "how often consumers' acknowledgements are committed to the catalog (0: 200ms)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		c.AckEvery = Duration(d)
		return err
	}},
	{"lease-ttl", "node lease at the controller: a leader silent this long is replaced (0: the timing preset's)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		c.LeaseTTL = Duration(d)
		return err
	}},
	{"secret", "refused on the command line (visible in ps): use --secret-file or RPSTREAM_SECRET", str(func(c *Config) *string { return &c.Secret })},
	{"secret-file", "file holding the cluster secret shared by every member (rdma authentication, gossip encryption); at least 16 bytes", str(func(c *Config) *string { return &c.SecretFile })},
	{"tls-cert", "this node's certificate, PEM (with --tls-key and --tls-ca: TLS on; SIGHUP reloads)", str(func(c *Config) *string { return &c.TLSCert })},
	{"tls-key", "this node's private key, PEM", str(func(c *Config) *string { return &c.TLSKey })},
	{"tls-ca", "CA certificates trusted for nodes and client certificates, PEM", str(func(c *Config) *string { return &c.TLSCA })},
	{"acl", "ACL file (JSON): clients must authenticate and get only what it grants; needs TLS; SIGHUP reloads", str(func(c *Config) *string { return &c.ACL })},
	{"rdma", "rdma provider: auto, tcp or verbs", str(func(c *Config) *string { return &c.RDMA })},
	{"mover", "data mover for local appends: auto, sync, cpu or dsa", str(func(c *Config) *string { return &c.Mover })},
	{"region-size", "region size of new streams: bytes, or with a unit such as 64k, 4MiB, 1g (powers of 1024)", func(c *Config, v string) error {
		n, err := validate.ParseSize(v)
		c.RegionSize = n
		return err
	}},
	{"max-open-streams", "most streams and copies kept open at once; idle ones close for room, else one more is refused with ResourceExhausted (0: as many as the file descriptor limit fits)", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err == nil && n < 0 {
			err = fmt.Errorf("negative")
		}
		c.MaxOpenStreams = n
		return err
	}},
	{"idle-close", "close a led stream unused this long; it reopens on its next use (0: 5m; negative: never)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		c.IdleClose = Duration(d)
		return err
	}},
	{"drain-timeout", "how long SIGTERM waits for calls in flight", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		c.DrainTimeout = Duration(d)
		return err
	}},
	{"log-level", "debug, info, warn or error", str(func(c *Config) *string { return &c.LogLevel })},
	{"log-format", "text or json", str(func(c *Config) *string { return &c.LogFormat })},
	{"admin-addr", "HTTP admin listener for /metrics, /healthz and /readyz, HOST:PORT (default: none)", str(func(c *Config) *string { return &c.AdminAddr })},
	{"pprof", "serve net/http/pprof under /debug/pprof/ on the admin listener", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		c.Pprof = b
		return err
	}},
}

// printUsage writes streamnode's usage: each flag with its default, the
// value DefaultConfig holds under the flag's JSON key.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	defaults := map[string]any{}
	if b, err := json.Marshal(DefaultConfig()); err == nil {
		json.Unmarshal(b, &defaults)
	}
	fmt.Fprint(w, `usage: streamnode [FLAGS]

streamnode is the rpstream daemon: it serves the client service (gRPC) over
the streams of its data directory and replicates them within its cluster.
Each setting comes from, lowest precedence first, its default, the JSON
config file, the environment (RPSTREAM_ and the flag's name in upper case,
- as _) and the flag. SIGTERM or SIGINT drains and exits 0.

flags:
`)
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		if kind == "string" {
			kind = "VALUE"
		}
		left := "--" + f.Name
		if kind != "" {
			left += " " + kind
		}
		def := ""
		switch v := defaults[strings.ReplaceAll(f.Name, "-", "_")].(type) {
		case string:
			def = v
		case float64:
			def = strconv.FormatFloat(v, 'f', -1, 64)
		case []any:
			var parts []string
			for _, p := range v {
				parts = append(parts, fmt.Sprint(p))
			}
			def = strings.Join(parts, ",")
		}
		if f.Name == "region-size" {
			def = validate.FormatSize(int64(DefaultConfig().RegionSize))
		}
		if def != "" {
			usage += " (default " + def + ")"
		}
		fmt.Fprintf(w, "  %s\n      %s\n", left, usage)
	})
	fmt.Fprint(w, "\nExit codes: 0 after a drain (or --help, --version), 1 a failure, 2 bad configuration.\n")
}

func envName(flagName string) string {
	return "RPSTREAM_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// errVersion is returned by loadConfig for --version.
var errVersion = errors.New("version asked")

// loadConfig builds the configuration from args (without the program
// name), the environment and the config file they name. For --help it
// writes the usage to usage and returns flag.ErrHelp; for --version it
// returns errVersion; for a flag that does not parse, the error, and a
// hint in usage.
func loadConfig(args []string, getenv func(string) string, usage *bytes.Buffer) (Config, error) {
	fs := flag.NewFlagSet("streamnode", flag.ContinueOnError)
	// The error is reported once, by the caller; the usage only on --help.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	configPath := fs.String("config", "", "JSON config `FILE` (env RPSTREAM_CONFIG)")
	version := fs.Bool("version", false, "print the version (build, commit, Go) and exit")
	vals := map[string]*string{}
	for _, s := range settings {
		if boolSettings[s.name] {
			vals[s.name] = new(string)
			fs.Var(boolValue{vals[s.name]}, s.name, s.usage+" (env "+envName(s.name)+")")
			continue
		}
		vals[s.name] = fs.String(s.name, "", s.usage+" (env "+envName(s.name)+")")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usage, fs)
		} else {
			usage.WriteString("Run streamnode --help for the flags.\n")
		}
		return Config{}, err
	}
	if *version {
		return Config{}, errVersion
	}
	if fs.NArg() > 0 {
		usage.WriteString("Run streamnode --help for the flags.\n")
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := DefaultConfig()
	path := *configPath
	if path == "" {
		path = getenv("RPSTREAM_CONFIG")
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	for _, s := range settings {
		if v := getenv(envName(s.name)); v != "" {
			if err := s.set(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%s: %w", envName(s.name), err)
			}
		}
	}
	var err error
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "secret" && err == nil {
			err = errors.New("--secret: refused on the command line, where ps shows it to every user: use --secret-file FILE or RPSTREAM_SECRET")
		}
		for _, s := range settings {
			if s.name == f.Name && err == nil {
				if serr := s.set(&cfg, *vals[s.name]); serr != nil {
					err = fmt.Errorf("--%s: %w", s.name, serr)
				}
			}
		}
	})
	if err != nil {
		return cfg, err
	}
	if cfg.SecretFile != "" {
		if cfg.Secret != "" {
			return cfg, errors.New("secret-file: the secret is also set (RPSTREAM_SECRET or the config file); give one")
		}
		b, err := os.ReadFile(cfg.SecretFile)
		if err != nil {
			return cfg, fmt.Errorf("secret-file: %w", err)
		}
		if cfg.Secret = strings.TrimRight(string(b), "\r\n"); cfg.Secret == "" {
			return cfg, fmt.Errorf("secret-file %s: empty", cfg.SecretFile)
		}
	}
	return cfg, cfg.Validate()
}
