package node

import "golang.org/x/sys/unix"

// freeBytes is the space left to unprivileged users in dir's file
// system, 0 if unknown.
func freeBytes(dir string) uint64 {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0
	}
	return st.Bavail * uint64(st.Bsize)
}
