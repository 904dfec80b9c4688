package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFill(t *testing.T) {
	in := Info{Version: "(devel)", Go: runtime.Version(), Platform: "linux/amd64"}
	in.fill(&debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-12-06T10:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}})
	want := Info{Version: "v1.2.3", Commit: "0123456789abcdef0123", CommitTime: "2026-12-06T10:00:00Z", Modified: true, Go: "go1.99.1", Platform: "linux/amd64"}
	if in != want {
		t.Fatalf("fill: %+v, want %+v", in, want)
	}
	if got := in.String("streamcli"); got != "streamcli v1.2.3 (commit 0123456789ab, modified) go1.99.1 linux/amd64" {
		t.Errorf("String: %q", got)
	}
	in.Modified = false
	if got := in.String("x"); !strings.Contains(got, "(commit 0123456789ab) ") {
		t.Errorf("String unmodified: %q", got)
	}
	in.Commit = ""
	if got := in.String("x"); got != "x v1.2.3 go1.99.1 linux/amd64" {
		t.Errorf("String of a release without commit: %q", got)
	}
	in.Version = "(devel)"
	if got := in.String("x"); !strings.Contains(got, "(commit unknown)") {
		t.Errorf("String without version or commit: %q", got)
	}
}

func TestReadOverride(t *testing.T) {
	old := Version
	defer func() { Version = old }()
	Version = "v9.9.9"
	if in := Read(); in.Version != "v9.9.9" || in.Go == "" {
		t.Fatalf("Read with -X Version: %+v", in)
	}
}
