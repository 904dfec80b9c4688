#!/usr/bin/env bash
# make test-softroce: creates a SoftRoCE (rxe) device on a network
# interface and runs the rdma conformance suite over the verbs provider.
# Needs root and a kernel with RDMA support (rdma_rxe). Fails, saying what
# is missing, where the kernel has none.
#
#   SOFTROCE_NETDEV=eth0 make test-softroce
set -euo pipefail
cd "$(dirname "$0")/.."
fail() {
	echo "test-softroce: FAIL: $*" >&2
	exit 1
}

iface="${SOFTROCE_NETDEV:-$(ip -o route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')}"
[ -n "$iface" ] || fail "no interface with a default route; set SOFTROCE_NETDEV"
addr="$(ip -o -4 addr show dev "$iface" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1)"
[ -n "$addr" ] || fail "interface $iface has no IPv4 address"
command -v rdma >/dev/null 2>&1 || fail "the rdma tool (iproute2) is not installed"

created=""
cleanup() {
	if [ -n "$created" ]; then
		rdma link delete "$created" >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT

if ! rdma link show 2>/dev/null | grep -q "netdev $iface\$\|netdev $iface "; then
	[ -d /sys/class/infiniband ] || modprobe rdma_rxe >/dev/null 2>&1 || true
	if ! out="$(rdma link add rxe_rpstream type rxe netdev "$iface" 2>&1)"; then
		kernel="$(uname -r)"
		[ -d /sys/class/infiniband ] || out="$out (no /sys/class/infiniband: kernel $kernel has no RDMA core loaded)"
		fail "cannot create a SoftRoCE device on $iface: $out
This kernel lacks RDMA support (needs CONFIG_INFINIBAND and CONFIG_RDMA_RXE, module rdma_rxe) or this process is not root.
On a kernel that has it, as root: modprobe rdma_rxe; rdma link add rxe0 type rxe netdev $iface; then rerun make test-softroce."
	fi
	created=rxe_rpstream
fi

tags="$(scripts/verbs-tags.sh)"
echo "test-softroce: SoftRoCE on $iface ($addr), build tags $tags"
out="$(RPSTREAM_VERBS_ADDR="$addr" go test -count=1 -v -timeout 5m -tags "$tags" -run 'TestConformance' ./rdma/verbs/ 2>&1)" || {
	echo "$out"
	fail "the conformance suite failed over verbs"
}
echo "$out"
if echo "$out" | grep -q -- '--- SKIP: TestConformance'; then
	fail "the conformance suite skipped: the device is not usable"
fi
echo "test-softroce: PASS"
