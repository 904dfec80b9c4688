//go:build verbs && cgo && verbs_atomic_write

package verbs

// The installed rdma-core has ibv_wr_atomic_write (scripts/verbs-tags.sh).

// #cgo CFLAGS: -DRP_HAVE_ATOMIC_WRITE=1
import "C"
