//go:build verbs && cgo && verbs_flush

package verbs

// The installed rdma-core has ibv_wr_flush (scripts/verbs-tags.sh).

// #cgo CFLAGS: -DRP_HAVE_FLUSH=1
import "C"
