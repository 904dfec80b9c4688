// Package buildinfo says which build a binary is: its version, the
// commit it was built from and whether the tree had changes, and the Go
// toolchain, from what the Go linker records (runtime/debug.ReadBuildInfo).
// streamcli and streamnode print it for --version.
//
// A build may name its version with the linker (make build and make
// images pass git describe's, since a build with -buildvcs=false, or from
// a git worktree, records no commit):
//
//	go build -ldflags "-X github.com/rpstream/rpstream/internal/buildinfo.Version=v1.2.0" ./cmd/...
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version, when set by -ldflags -X, is the version printed instead of the
// module's (which is "(devel)" for a binary built inside its repository).
var Version string

// Info is what a binary knows of its build. Scripts read its JSON field
// names (streamcli version --output json): never rename one.
type Info struct {
	// Version is the release version (-ldflags), else the main module's
	// version, else "(devel)".
	Version string `json:"version"`
	// Commit is the VCS revision built ("" when unknown: built outside a
	// repository, or with -buildvcs=false); CommitTime its time (RFC 3339).
	Commit     string `json:"commit"`
	CommitTime string `json:"commit_time"`
	// Modified says the working tree had uncommitted changes.
	Modified bool `json:"modified"`
	// Go is the toolchain's version; Platform is GOOS/GOARCH.
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// Read returns the Info of the running binary.
func Read() Info {
	in := Info{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		in.fill(bi)
	}
	if Version != "" {
		in.Version = Version
	}
	return in
}

// fill takes what bi records.
func (in *Info) fill(bi *debug.BuildInfo) {
	if v := bi.Main.Version; v != "" {
		in.Version = v
	}
	if bi.GoVersion != "" {
		in.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Commit = s.Value
		case "vcs.time":
			in.CommitTime = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
}

// String is one line naming program and its build:
// "streamcli v1.2.0 (commit 0123abcd4567, modified) go1.25.1 linux/amd64".
func (in Info) String(program string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", program, in.Version)
	switch {
	case in.Commit != "" && in.Modified:
		fmt.Fprintf(&b, " (commit %s, modified)", short(in.Commit))
	case in.Commit != "":
		fmt.Fprintf(&b, " (commit %s)", short(in.Commit))
	case in.Version == "(devel)":
		// Neither a release nor VCS information (-buildvcs=false, or
		// a build outside the repository): say so.
		b.WriteString(" (commit unknown)")
	}
	fmt.Fprintf(&b, " %s %s", in.Go, in.Platform)
	return b.String()
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
