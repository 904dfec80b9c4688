package integration

// Helpers of docker_test.go: a docker-compose cluster of the repository's
// docker-compose.yml under a project name, image, subnet and host ports of
// its own, so that it runs beside `make compose-up` and other tests. Every
// docker command runs synchronously with a deadline (its process is killed
// when the deadline passes); t.Cleanup takes everything down.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
	"github.com/rpstream/rpstream/pki"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// composeServices are the services of docker-compose.yml, with the last
// octet of each one's address and the variable publishing its client port.
var composeServices = []struct {
	name    string
	octet   int
	portVar string
}{
	{"n1", 11, "RPSTREAM_N1_PORT"},
	{"n2", 12, "RPSTREAM_N2_PORT"},
	{"n3", 13, "RPSTREAM_N3_PORT"},
	{"backup", 14, "RPSTREAM_BACKUP_PORT"},
}

// dockerRun runs a command with a deadline and returns its combined
// output; the error carries the output.
func dockerRun(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// dockerOrSkip skips t unless the docker CLI exists, its daemon answers and
// a compose command works; it returns the compose command ("docker
// compose" preferred, else "docker-compose").
func dockerOrSkip(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("docker compose cluster: skipped in -short mode")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker compose cluster: no docker command in PATH")
	}
	if out, err := dockerRun(context.Background(), 20*time.Second, os.Environ(), "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("docker compose cluster: the docker daemon does not answer: %v", firstLine(out, err))
	}
	if _, err := dockerRun(context.Background(), 20*time.Second, os.Environ(), "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		if _, err := dockerRun(context.Background(), 20*time.Second, os.Environ(), "docker-compose", "version"); err == nil {
			return []string{"docker-compose"}
		}
	}
	t.Skip("docker compose cluster: neither `docker compose` nor `docker-compose` works")
	return nil
}

func firstLine(out string, err error) string {
	s := strings.TrimSpace(out)
	if s == "" {
		s = err.Error()
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// freePorts returns n distinct ports free on 127.0.0.1 a moment ago
// (proccluster.FreePorts: below the ephemeral range).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := proccluster.FreePorts("127.0.0.1", n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// repoRoot is the directory of go.mod and docker-compose.yml.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.mod", "docker-compose.yml", "deploy/Dockerfile"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("repository root %s: %v", root, err)
		}
	}
	return root
}

// buildComposeImage builds static streamnode and streamcli into a
// temporary directory and the image tag from them with deploy/Dockerfile.
// The image is removed in t.Cleanup. It returns the directory, whose
// streamcli runs on the host too.
func buildComposeImage(t *testing.T, root, tag string) string {
	t.Helper()
	dir := t.TempDir()
	// go test puts its own GOROOT/bin first in PATH.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the image's binaries: %v", err)
	}
	// The Dockerfile's context: the binaries and an empty data directory.
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if _, err := dockerRun(context.Background(), 5*time.Minute, env, gobin, "-C", root, "build", "-trimpath", "-ldflags=-s -w", "-o", dir+"/", "./cmd/streamnode", "./cmd/streamcli"); err != nil {
		t.Fatalf("static build: %v", err)
	}
	if _, err := dockerRun(context.Background(), 3*time.Minute, os.Environ(), "docker", "build", "-q", "-t", tag, "-f", filepath.Join(root, "deploy", "Dockerfile"), dir); err != nil {
		t.Fatalf("docker build: %v", err)
	}
	t.Cleanup(func() {
		if _, err := dockerRun(context.Background(), time.Minute, os.Environ(), "docker", "rmi", "-f", tag); err != nil {
			t.Errorf("removing image %s: %v", tag, err)
		}
	})
	return dir
}

// composeCluster is one project of docker-compose.yml.
type composeCluster struct {
	t       *testing.T
	compose []string // the compose command
	file    string
	project string
	env     []string
	net     string         // first three octets of the /24
	ports   map[string]int // service -> client port on 127.0.0.1
	tls     string         // the development CA and certificates (RPSTREAM_TLS_DIR)
}

// options is o with the TLS files and client certificate of the cluster.
func (c *composeCluster) options(o client.Options) client.Options {
	o.TLSCAFile = filepath.Join(c.tls, "ca.crt")
	o.TLSCertFile, o.TLSKeyFile = filepath.Join(c.tls, "admin.crt"), filepath.Join(c.tls, "admin.key")
	return o
}

// writeTLS makes the cluster's development CA and certificates (as make
// compose-up does with scripts/compose-tls.sh) for the network c.net.
func (c *composeCluster) writeTLS() error {
	c.tls = c.t.TempDir()
	var nodes, hosts []string
	for _, s := range composeServices {
		nodes = append(nodes, s.name)
		hosts = append(hosts, c.ip(s.name))
	}
	if err := pki.WriteDevSet(pki.DevSet{Dir: c.tls, Nodes: nodes, Hosts: hosts, Clients: []string{"admin"}}); err != nil {
		return err
	}
	// The containers run as 65532: the keys they read must be readable
	// (a throwaway CA of this test only; ca.key stays private).
	for _, n := range append(nodes, "admin") {
		if err := os.Chmod(filepath.Join(c.tls, n+".key"), 0o644); err != nil {
			return err
		}
	}
	return os.Chmod(c.tls, 0o755)
}

func (c *composeCluster) run(timeout time.Duration, args ...string) (string, error) {
	full := append(append(c.compose[1:len(c.compose):len(c.compose)], "-f", c.file, "-p", c.project), args...)
	return dockerRun(context.Background(), timeout, c.env, c.compose[0], full...)
}

// addr is service's client address on the host.
func (c *composeCluster) addr(service string) string {
	return "127.0.0.1:" + strconv.Itoa(c.ports[service])
}

// ip is service's address on the compose network.
func (c *composeCluster) ip(service string) string {
	for _, s := range composeServices {
		if s.name == service {
			return c.net + "." + strconv.Itoa(s.octet)
		}
	}
	c.t.Fatalf("no service %q", service)
	return ""
}

// startCompose brings the cluster up with image and registers its
// teardown (down -v) in t.Cleanup, before which it logs the services'
// logs if the test failed. A subnet already in use is retried with another.
func startCompose(t *testing.T, compose []string, root, image string) *composeCluster {
	t.Helper()
	c := &composeCluster{t: t, compose: compose, file: filepath.Join(root, "docker-compose.yml"),
		project: "rpstream-it-" + randomHex(t, 4), ports: map[string]int{}}
	ports := freePorts(t, len(composeServices))
	for i, s := range composeServices {
		c.ports[s.name] = ports[i]
	}
	t.Cleanup(c.down)
	secret := "it-" + randomHex(t, 16) // the members' shared secret
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		b := make([]byte, 1)
		rand.Read(b)
		c.net = "10.213." + strconv.Itoa(100+int(b[0])%150)
		if err := c.writeTLS(); err != nil {
			t.Fatal(err)
		}
		c.env = append(os.Environ(), "RPSTREAM_IMAGE="+image, "RPSTREAM_NET="+c.net, "RPSTREAM_SECRET="+secret, "RPSTREAM_TLS_DIR="+c.tls,
			"RPSTREAM_TLS_CA="+filepath.Join(c.tls, "ca.crt"), "RPSTREAM_TLS_CERT="+filepath.Join(c.tls, "admin.crt"), "RPSTREAM_TLS_KEY="+filepath.Join(c.tls, "admin.key"))
		for _, s := range composeServices {
			c.env = append(c.env, s.portVar+"="+strconv.Itoa(c.ports[s.name]))
		}
		var out string
		out, err = c.run(3*time.Minute, "up", "-d", "--no-build")
		if err == nil {
			return c
		}
		if !strings.Contains(strings.ToLower(out), "overlap") {
			break
		}
		c.run(time.Minute, "down", "-v", "--remove-orphans", "-t", "5")
	}
	t.Fatalf("compose up: %v", err)
	return nil
}

func (c *composeCluster) down() {
	t := c.t
	if t.Failed() {
		if out, err := c.run(time.Minute, "logs", "--no-color", "--tail", "60"); err == nil {
			t.Logf("compose logs of %s:\n%s", c.project, out)
		}
	}
	if _, err := c.run(2*time.Minute, "down", "-v", "--remove-orphans", "-t", "15"); err != nil {
		t.Errorf("compose down: %v", err)
		// Remove by label what down left.
		label := "label=com.docker.compose.project=" + c.project
		if out, err := dockerRun(context.Background(), time.Minute, c.env, "docker", "ps", "-aq", "--filter", label); err == nil && strings.TrimSpace(out) != "" {
			dockerRun(context.Background(), time.Minute, c.env, "docker", append([]string{"rm", "-f"}, strings.Fields(out)...)...)
		}
		for _, kind := range []string{"network", "volume"} {
			if out, err := dockerRun(context.Background(), time.Minute, c.env, "docker", kind, "ls", "-q", "--filter", label); err == nil && strings.TrimSpace(out) != "" {
				dockerRun(context.Background(), time.Minute, c.env, "docker", append([]string{kind, "rm"}, strings.Fields(out)...)...)
			}
		}
	}
}

// container is the id of service's container.
func (c *composeCluster) container(service string) string {
	c.t.Helper()
	out, err := c.run(time.Minute, "ps", "-q", service)
	id := strings.TrimSpace(out)
	if err != nil || id == "" || strings.ContainsAny(id, " \n") {
		c.t.Fatalf("container of %s: %q %v", service, id, err)
	}
	return id
}

// network is the name of the compose network service's container is on.
func (c *composeCluster) network(service string) string {
	c.t.Helper()
	out, err := dockerRun(context.Background(), time.Minute, c.env, "docker", "inspect", "-f",
		"{{range $k, $v := .NetworkSettings.Networks}}{{$k}}\n{{end}}", c.container(service))
	nets := strings.Fields(out)
	if err != nil || len(nets) != 1 {
		c.t.Fatalf("network of %s: %q %v", service, out, err)
	}
	return nets[0]
}
