package proccluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// StreamnodePackage is the import path Build builds.
const StreamnodePackage = "github.com/rpstream/rpstream/cmd/streamnode"

// FindBinary returns the streamnode executable to run: explicit if it is
// not empty, else a streamnode next to this program's executable, else
// one on PATH.
func FindBinary(explicit string) (string, error) {
	if explicit != "" {
		if err := executable(explicit); err != nil {
			return "", fmt.Errorf("proccluster: streamnode %q: %w", explicit, err)
		}
		return explicit, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "streamnode")
		if executable(p) == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("streamnode"); err == nil {
		return p, nil
	}
	return "", errors.New("proccluster: no streamnode next to this program or on PATH (give its path, or make build)")
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// Build builds streamnode into dir with the go tool of the running
// toolchain (or go on PATH) and returns its path. It must run inside the
// module (a test's working directory is).
func Build(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "streamnode")
	gotool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gotool); err != nil {
		gotool = "go"
	}
	out, err := exec.CommandContext(ctx, gotool, "build", "-o", bin, StreamnodePackage).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("proccluster: go build %s: %v\n%s", StreamnodePackage, err, out)
	}
	return bin, nil
}

var built struct {
	mu  sync.Mutex
	dir string
	bin string
	err error
}

// BuildOnce builds streamnode once per process into a fresh temporary
// directory and returns its path (the same on every call until
// RemoveBuilt, which removes the directory: call it from TestMain after
// the tests run; a later call builds again).
func BuildOnce() (string, error) {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.err == nil && built.bin != "" {
		if _, err := os.Stat(built.bin); err == nil {
			return built.bin, nil
		}
	}
	// First call, or RemoveBuilt ran (a test run with -count > 1): build.
	built.dir, built.err = os.MkdirTemp("", "proccluster-bin-")
	if built.err == nil {
		built.bin, built.err = Build(context.Background(), built.dir)
	}
	return built.bin, built.err
}

// RemoveBuilt removes what BuildOnce built, if anything.
func RemoveBuilt() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	built.dir, built.bin, built.err = "", "", nil
}
