package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBashCompletion loads the script of streamcli completion bash into a
// real bash and completes words with it, as bash does on Tab.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	data := t.TempDir()
	for _, s := range []string{"orders", "other"} {
		if r := run(t, "", "--data", data, "create", s); r.code != 0 {
			t.Fatal(r.stderr)
		}
	}
	script := `source <(streamcli completion bash) || exit 1
t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _streamcli; echo "${COMPREPLY[*]}"; }
t streamcli ""
t streamcli de
t streamcli tail o
t streamcli --data "$DATA" delete ord
t streamcli tail orders --output = j
t streamcli cluster ""
t streamcli bench cluster --ac
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "--norc", "-c", script)
	cmd.Env = env("PATH="+filepath.Dir(bin)+":/usr/bin:/bin", "RPSTREAM_DATA="+data, "DATA="+data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	want := []string{
		"create append tail ls delete trim retention consumer status health members cluster restore bench version completion man help",
		"delete",
		"orders other",
		"orders",
		"json",
		"add-voter remove-voter",
		"--acks",
	}
	if got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("completions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestVersion: --version and the version command name the build.
func TestVersion(t *testing.T) {
	r := run(t, "", "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "streamcli ") || !strings.Contains(r.stdout, " go1.") {
		t.Fatalf("--version: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if v := run(t, "", "version"); v.stdout != r.stdout {
		t.Fatalf("version printed %q, --version %q", v.stdout, r.stdout)
	}
	j := run(t, "", "version", "--output", "json")
	for _, k := range []string{`"version":`, `"commit":`, `"modified":`, `"go":"go1.`} {
		if !strings.Contains(j.stdout, k) {
			t.Fatalf("version --output json lacks %s: %s", k, j.stdout)
		}
	}
}
