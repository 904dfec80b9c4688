// Package testutil holds helpers shared by the tests of several packages.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// SmallFS mounts a tmpfs of the given size on a fresh directory and returns
// the directory; the mount is removed when the test ends. Tests use it to
// fill a file system on purpose. It skips the test, naming what is missing,
// where mounting is not allowed (not root, no mount(8)).
func SmallFS(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		t.Skip("full-disk test needs root to mount a small tmpfs")
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skip(fmt.Sprintf("full-disk test cannot mount a small tmpfs: %v: %s", err, out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
