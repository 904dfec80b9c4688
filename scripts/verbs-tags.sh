#!/usr/bin/env bash
# Prints the build tags for the verbs provider on this machine: "verbs",
# plus "verbs_atomic_write" and "verbs_flush" when the installed rdma-core
# headers have ibv_wr_atomic_write (rdma-core 44) and ibv_wr_flush
# (rdma-core 45). These are enum members and inline functions, invisible to
# #ifdef, so they are probed by compiling a snippet; the tags turn on
# -DRP_HAVE_* (rdma/verbs/feature_*.go). Without them the provider uses the
# portable fallbacks (fenced inline write, read after write).
set -uo pipefail
cc="${CC:-cc}"
probe() {
	printf '#include <infiniband/verbs.h>\nvoid f(struct ibv_qp_ex *q) { %s; }\n' "$1" |
		"$cc" -x c -fsyntax-only - >/dev/null 2>&1
}
tags="verbs"
probe 'uint64_t v = 0; ibv_wr_atomic_write(q, 0, 0, &v); (void)IBV_QP_EX_WITH_ATOMIC_WRITE' && tags="$tags,verbs_atomic_write"
probe 'ibv_wr_flush(q, 0, 0, 0, IBV_FLUSH_PERSISTENT, IBV_FLUSH_RANGE); (void)IBV_QP_EX_WITH_FLUSH; (void)IBV_ACCESS_FLUSH_GLOBAL' && tags="$tags,verbs_flush"
echo "$tags"
