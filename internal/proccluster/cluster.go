// Package proccluster runs a cluster of streamnode processes on loopback,
// for integration tests and for "streamcli bench cluster".
//
// Start picks free ports (client, peer, gossip) on 127.0.0.1, or on the
// Config's Hosts, for every member, starts each as its own streamnode
// process (--name nK --data DIR/nK, the others' gossip addresses in
// --join, --role node or backup, then the Config's Args; JSON logs
// appended to DIR/nK.log, each start headed by its command line) and
// waits, bounded, until each answers the client service and lists every
// running member alive. RDMAProvider reads back from a member's log the
// rdma provider it chose. Members keep their ports and data
// directories across Kill/Stop and Start, so a restarted member is the
// same member. Close kills, by PID, every process the Cluster started;
// call it in every path (t.Cleanup, defer).
//
// A Cluster is used by one goroutine at a time, except ClientAddrs, Node
// and Running, which may be called at any time.
package proccluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/pki"
)

// Config describes a cluster. Binary and Dir are required.
type Config struct {
	// Binary is the path of the streamnode executable (see FindBinary,
	// Build).
	Binary string
	// Dir holds each member's data directory (Dir/NAME) and log
	// (Dir/NAME.log). It must exist.
	Dir string
	// Nodes is the number of members with --role node, named n1..nN;
	// zero means 3.
	Nodes int
	// Backup adds one member with --role backup, named "backup", last.
	Backup bool
	// Args are passed to every member after the harness's own flags
	// (such as --region-size 1048576); none may be one of those (see
	// OwnFlag).
	Args []string
	// StartTimeout bounds the wait for a member to answer after it is
	// started; zero means 30 s.
	StartTimeout time.Duration
	// StopTimeout bounds the wait for a member to exit after SIGTERM
	// (Stop) before it is killed; zero means 20 s.
	StopTimeout time.Duration
	// Hosts, if set, are the IP addresses members listen on (client, peer
	// and gossip), member i on Hosts[i%len(Hosts)]: for instance the
	// addresses of a SoftRoCE device's interface, so that each member's
	// rdma traffic has its own address (make test-softroce). Empty means
	// 127.0.0.1 for all.
	Hosts []string
	// SkipMembership makes a member ready as soon as it answers. By
	// default a member is ready once its Members lists every running
	// member alive (gossip has converged), so that streams created next
	// can be placed on all of them.
	SkipMembership bool
	// TLS runs the members with TLS on: Start writes a development CA
	// and a certificate per member and for the client "admin" into
	// Dir/tls (pki.WriteDevSet), and the harness's own clients use
	// ClientOptions. ACL, if set, is passed as every member's --acl.
	TLS bool
	ACL string
	// Wrap, if set, is the command prefix that runs member i (such as
	// nsenter into a network namespace of its own; see internal/netlab).
	// Each member must then have a host of its own (Hosts), whose ports
	// this process cannot probe: members listen on the fixed ports
	// 7420 (client), 7421 (peer), 7946 (gossip) and 7423 (admin) of
	// their host.
	Wrap func(i int) []string
	// Admin gives every member an admin listener (--admin-addr: metrics,
	// readiness) on a port of its own, Node.AdminAddr.
	Admin bool
}

// Node describes one member.
type Node struct {
	Name       string
	Role       string // node or backup
	Data       string // its --data directory
	Log        string // its log file
	ClientAddr string
	PeerAddr   string
	GossipAddr string
	AdminAddr  string // with Config.Admin
}

// member is a Node and its process, if running.
type member struct {
	Node
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
}

// Cluster is a running set of streamnode processes.
type Cluster struct {
	cfg Config

	mu      sync.Mutex // guards members' cmd and exited
	members []*member
}

// Errors.
var (
	// ErrIndex is returned for a member index out of range.
	ErrIndex = errors.New("proccluster: no such member")
	// ErrExited is returned when a member exits before answering.
	ErrExited = errors.New("proccluster: streamnode exited")
)

// Start starts every member of cfg and waits until each answers. On an
// error every process already started is killed.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Binary == "" {
		return nil, errors.New("proccluster: no streamnode binary given")
	}
	if st, err := os.Stat(cfg.Dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("proccluster: base directory %q: not a directory (%v)", cfg.Dir, err)
	}
	if cfg.Nodes < 0 || cfg.Nodes > 64 {
		return nil, fmt.Errorf("proccluster: %d nodes: want 1 to 64", cfg.Nodes)
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	for _, a := range cfg.Args {
		if OwnFlag(a) {
			return nil, fmt.Errorf("proccluster: argument %q: the harness sets that flag itself", a)
		}
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 20 * time.Second
	}
	n := cfg.Nodes
	if cfg.Backup {
		n++
	}
	hosts := cfg.Hosts
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	for _, h := range hosts {
		if net.ParseIP(h) == nil {
			return nil, fmt.Errorf("proccluster: host %q is not an IP address", h)
		}
	}
	// Every port of one host is picked in one call, so none is picked
	// twice.
	per := 3
	if cfg.Admin {
		per = 4
	}
	need := map[string]int{}
	for i := range n {
		need[hosts[i%len(hosts)]] += per
	}
	free := map[string][]int{}
	for h, k := range need {
		if cfg.Wrap != nil {
			if k > per {
				return nil, fmt.Errorf("proccluster: host %s given to more than one wrapped member", h)
			}
			free[h] = []int{7420, 7421, 7946, 7423}
			continue
		}
		ports, err := freePorts(h, k)
		if err != nil {
			return nil, err
		}
		free[h] = ports
	}
	c := &Cluster{cfg: cfg}
	for i := range n {
		host := hosts[i%len(hosts)]
		ports := free[host][:per]
		free[host] = free[host][per:]
		m := &member{Node: Node{Name: "n" + strconv.Itoa(i+1), Role: "node"}}
		if i == cfg.Nodes {
			m.Name, m.Role = "backup", "backup"
		}
		m.Data = filepath.Join(cfg.Dir, m.Name)
		m.Log = filepath.Join(cfg.Dir, m.Name+".log")
		m.ClientAddr = net.JoinHostPort(host, strconv.Itoa(ports[0]))
		m.PeerAddr = net.JoinHostPort(host, strconv.Itoa(ports[1]))
		m.GossipAddr = net.JoinHostPort(host, strconv.Itoa(ports[2]))
		if cfg.Admin {
			m.AdminAddr = net.JoinHostPort(host, strconv.Itoa(ports[3]))
		}
		c.members = append(c.members, m)
	}
	if cfg.TLS {
		var names []string
		for _, m := range c.members {
			names = append(names, m.Name)
		}
		if err := pki.WriteDevSet(pki.DevSet{Dir: c.TLSDir(), Nodes: names, Hosts: hosts, Clients: []string{"admin"}}); err != nil {
			return nil, fmt.Errorf("proccluster: TLS files: %w", err)
		}
	} else if cfg.ACL != "" {
		return nil, errors.New("proccluster: an ACL needs TLS")
	}
	// Start them all, then wait for each: members that join one another
	// may need the others up to become ready.
	for i := range c.members {
		if err := c.launch(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	for i := range c.members {
		if err := c.waitReady(ctx, i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// TLSDir holds the TLS files of a cluster started with TLS: ca.crt,
// NAME.crt and NAME.key per member, admin.crt and admin.key.
func (c *Cluster) TLSDir() string { return filepath.Join(c.cfg.Dir, "tls") }

// ClientOptions are the options a client of the cluster needs: the CA
// and the "admin" client certificate when it runs with TLS, none without.
func (c *Cluster) ClientOptions() client.Options {
	if !c.cfg.TLS {
		return client.Options{}
	}
	d := c.TLSDir()
	return client.Options{TLSCAFile: filepath.Join(d, "ca.crt"), TLSCertFile: filepath.Join(d, "admin.crt"), TLSKeyFile: filepath.Join(d, "admin.key")}
}

// Len is the number of members, the backup included.
func (c *Cluster) Len() int { return len(c.members) }

// Node describes member i (0-based; the backup is last).
func (c *Cluster) Node(i int) (Node, error) {
	if i < 0 || i >= len(c.members) {
		return Node{}, fmt.Errorf("%w: %d of %d", ErrIndex, i, len(c.members))
	}
	return c.members[i].Node, nil
}

// ClientAddrs are the members' client addresses, in member order.
func (c *Cluster) ClientAddrs() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.ClientAddr
	}
	return out
}

// Running reports whether member i's process is running.
func (c *Cluster) Running(i int) bool {
	if i < 0 || i >= len(c.members) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// PID is the process id of member i, or 0 when it is not running.
func (c *Cluster) PID(i int) int {
	if !c.Running(i) {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].cmd.Process.Pid
}

// Start starts member i again, with its ports and data directory, and
// waits until it answers. It fails if the member is running.
func (c *Cluster) Start(ctx context.Context, i int) error {
	if i < 0 || i >= len(c.members) {
		return fmt.Errorf("%w: %d of %d", ErrIndex, i, len(c.members))
	}
	if c.Running(i) {
		return fmt.Errorf("proccluster: %s is running", c.members[i].Name)
	}
	if err := c.launch(i); err != nil {
		return err
	}
	return c.waitReady(ctx, i)
}

// Kill sends SIGKILL to member i's process and waits for it to exit. A
// member not running is left alone.
func (c *Cluster) Kill(i int) error {
	m, err := c.running(i)
	if err != nil || m == nil {
		return err
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
	return nil
}

// Stop sends SIGTERM to member i's process and waits for it to exit, at
// most Config.StopTimeout; then it sends SIGQUIT (a goroutine dump into
// the log), kills it if it still runs 5 s later, and returns an error. An exit
// code other than 0 is an error too (streamnode exits 0 after draining).
func (c *Cluster) Stop(i int) error {
	m, err := c.running(i)
	if err != nil || m == nil {
		return err
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(c.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-m.exited:
	case <-t.C:
		// SIGQUIT first: the Go runtime writes every goroutine's stack to
		// the log and exits, which shows what the stop waited for.
		m.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-m.exited:
		case <-time.After(5 * time.Second):
			m.cmd.Process.Signal(syscall.SIGKILL)
			<-m.exited
		}
		return fmt.Errorf("proccluster: %s did not exit within %v of SIGTERM; its goroutines are dumped in its log %s", m.Name, c.cfg.StopTimeout, m.Log)
	}
	if code := m.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("proccluster: %s exited %d after SIGTERM (log %s)", m.Name, code, m.Log)
	}
	return nil
}

// Close kills every process the Cluster started that still runs and
// waits for each. It is safe to call more than once.
func (c *Cluster) Close() error {
	for i := range c.members {
		c.Kill(i)
	}
	return nil
}

// running returns member i if its process runs, nil if not.
func (c *Cluster) running(i int) (*member, error) {
	if i < 0 || i >= len(c.members) {
		return nil, fmt.Errorf("%w: %d of %d", ErrIndex, i, len(c.members))
	}
	if !c.Running(i) {
		return nil, nil
	}
	return c.members[i], nil
}

// ownFlags are the streamnode flags by which the harness knows its
// members (args): their name, data, addresses, role, the JSON log it
// reads and the TLS material it made. A second one in Config.Args would
// override it behind the harness's back. (--voters and --catalog-timing
// are defaults that Args may override.)
var ownFlags = map[string]bool{"name": true, "data": true, "client-addr": true, "peer-addr": true,
	"gossip-addr": true, "role": true, "log-format": true, "join": true, "admin-addr": true,
	"tls-ca": true, "tls-cert": true, "tls-key": true}

// OwnFlag reports whether arg (such as "--data" or "-name=x") is a
// streamnode flag the harness sets for every member, which Config.Args
// must not repeat.
func OwnFlag(arg string) bool {
	if !strings.HasPrefix(arg, "-") {
		return false
	}
	name := strings.TrimLeft(arg, "-")
	if k := strings.IndexByte(name, '='); k >= 0 {
		name = name[:k]
	}
	return ownFlags[name]
}

// args are member i's command line.
func (c *Cluster) args(i int) []string {
	m := c.members[i]
	var join []string
	for j, o := range c.members {
		if j != i {
			join = append(join, o.GossipAddr)
		}
	}
	a := []string{"--name", m.Name, "--data", m.Data, "--client-addr", m.ClientAddr,
		"--peer-addr", m.PeerAddr, "--gossip-addr", m.GossipAddr, "--role", m.Role, "--log-format", "json"}
	if len(join) > 0 {
		a = append(a, "--join", strings.Join(join, ","))
	}
	if m.AdminAddr != "" {
		a = append(a, "--admin-addr", m.AdminAddr)
	}
	// The first three stream nodes vote in the catalog; timings for one
	// machine.
	var voters []string
	for j := 0; j < min(3, c.cfg.Nodes); j++ {
		voters = append(voters, c.members[j].Name)
	}
	a = append(a, "--voters", strings.Join(voters, ","), "--catalog-timing", "loopback")
	if c.cfg.TLS {
		d := c.TLSDir()
		a = append(a, "--tls-ca", filepath.Join(d, "ca.crt"), "--tls-cert", filepath.Join(d, m.Name+".crt"), "--tls-key", filepath.Join(d, m.Name+".key"))
		if c.cfg.ACL != "" {
			a = append(a, "--acl", c.cfg.ACL)
		}
	}
	return append(a, c.cfg.Args...)
}

// launch starts member i's process, its output appended to its log.
func (c *Cluster) launch(i int) error {
	m := c.members[i]
	logf, err := os.OpenFile(m.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("proccluster: %w", err)
	}
	argv := append([]string{c.cfg.Binary}, c.args(i)...)
	if c.cfg.Wrap != nil {
		argv = append(c.cfg.Wrap(i), argv...)
	}
	fmt.Fprintf(logf, "# proccluster: starting %s at %s: %s\n", m.Name, time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = memberEnv()
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("proccluster: start %s: %w", m.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	c.mu.Lock()
	m.cmd, m.exited = cmd, exited
	c.mu.Unlock()
	return nil
}

// memberEnv is this process's environment without RPSTREAM_ settings,
// so that only the harness's flags configure a member.
func memberEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RPSTREAM_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitReady polls member i's client service until Members answers (and,
// unless SkipMembership, lists every running member alive), the process
// exits, StartTimeout passes or ctx ends.
func (c *Cluster) waitReady(ctx context.Context, i int) error {
	m := c.members[i]
	c.mu.Lock()
	exited := m.exited
	c.mu.Unlock()
	o := c.ClientOptions()
	o.MaxAttempts = 1
	cl, err := client.Dial(m.ClientAddr, o)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		var ms []*api.Member
		ms, last = cl.Members(actx)
		acancel()
		if last == nil && c.cfg.SkipMembership {
			return nil
		}
		if last == nil {
			last = c.converged(ms)
		}
		if last == nil {
			// Registered in the catalog: it serves streams from now on.
			actx, acancel := context.WithTimeout(ctx, time.Second)
			var cs *api.ClusterStatusResponse
			cs, last = cl.API().ClusterStatus(actx, &api.ClusterStatusRequest{})
			acancel()
			if last == nil && !cs.Registered {
				last = fmt.Errorf("%s is not registered in the catalog yet (controller %q)", m.Name, cs.Controller)
			}
			// And caught up: it knows the controller and has applied
			// what it knows committed. A restarted member that answered
			// before that listed streams without the latest, or knew no
			// controller, once its client reconnected at once (the
			// client's backoff once kept the harness a second behind).
			if last == nil && (cs.Controller == "" || cs.Applied < cs.Commit) {
				last = fmt.Errorf("%s is not caught up with the catalog yet (controller %q, applied %d of %d)", m.Name, cs.Controller, cs.Applied, cs.Commit)
			}
			if last == nil {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("%w: %s before answering: %s", ErrExited, m.Name, LogTail(m.Log, 20))
		case <-ctx.Done():
			return fmt.Errorf("proccluster: %s did not answer within %v: %v; log: %s", m.Name, c.cfg.StartTimeout, last, LogTail(m.Log, 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// converged says which running member ms does not list alive, if any.
func (c *Cluster) converged(ms []*api.Member) error {
	alive := map[string]bool{}
	for _, m := range ms {
		if m.State == api.MemberState_MEMBER_STATE_ALIVE {
			alive[m.Name] = true
		}
	}
	for j, m := range c.members {
		if c.Running(j) && !alive[m.Name] {
			return fmt.Errorf("proccluster: %s not yet seen alive", m.Name)
		}
	}
	return nil
}

// LogTail returns the last n lines of the file at path, for error
// messages.
func LogTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct ports of host free for TCP and UDP (the
// gossip port takes both) when asked. Another process may take one before
// the member binds it; Start then reports the member's failure.
//
// The ports are drawn at random from below the kernel's ephemeral range
// (ip_local_port_range), not asked of it with port 0: a member killed and
// started again must bind its port again, and a port of the ephemeral
// range may meanwhile have become the local end of any process's
// outgoing connection (then the restart fails with "address already in
// use"); ports below the range are never handed out that way. Where the
// range leaves too little room below it, the kernel picks.
func freePorts(host string, n int) ([]int, error) {
	var held []net.Listener
	var heldUDP []net.PacketConn
	defer func() {
		for _, l := range held {
			l.Close()
		}
		for _, p := range heldUDP {
			p.Close()
		}
	}()
	lo, hi := 0, 0 // draw from [lo, hi); 0: ask the kernel
	if eph := ephemeralLow(); eph-minDrawnPort >= 4096 {
		lo, hi = minDrawnPort, eph
	}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 50*n {
			return nil, fmt.Errorf("proccluster: cannot find free ports on %s", host)
		}
		want := 0
		if hi > lo {
			want = lo + rand.IntN(hi-lo)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(want)))
		if err != nil {
			if want != 0 {
				continue // taken: draw again
			}
			return nil, fmt.Errorf("proccluster: %w", err)
		}
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		p, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue // keep the TCP one held so it is not picked again
		}
		heldUDP = append(heldUDP, p)
		ports = append(ports, port)
	}
	return ports, nil
}

// minDrawnPort is the lowest port freePorts draws: above the well-known
// and most registered services' ports.
const minDrawnPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range, or 0
// when it cannot be read (not Linux).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return lo
}

// FreePorts returns n distinct free TCP ports on host (an IP address),
// for a process a test starts beside a Cluster.
func FreePorts(host string, n int) ([]int, error) { return freePorts(host, n) }
