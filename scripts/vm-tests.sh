#!/usr/bin/env bash
# scripts/vm-tests.sh SUITE...: the tests that need what our kernel lacks,
# run inside one VM (scripts/vm.sh). Suites:
#
#   softroce  the rdma conformance suite over the verbs provider on rxe
#             (it fails, not skips, without the device; VM_RACE=1 builds it
#             with the race detector: its Sizes test then takes 2.5 minutes
#             under TCG), then TestKillReplicaSoftRoCE: three streamnodes and
#             a backup with --rdma verbs, each on its own address of rxe0,
#             a stream with three replicas, four clients appending, a
#             follower SIGKILLed and restarted, every copy compared byte for
#             byte; the rxe packet counters show the traffic went over rxe.
#   pmem      on an ext4 mounted -o dax (fsdax on a memmap= region): the
#             pmem suite (TestDAX fails if the mapping is not MAP_SYNC or the
#             flush instruction is not the one /proc/cpuinfo offers) and the
#             local suite with its kill -9 test, files in TMPDIR=/mnt/dax;
#             then streamcli ls on a DAX stream must say "flush". Skipped
#             here, run on the host by make unit: the crash-image
#             enumerations (TestCrashConsistency*, *DamageSweep), which use
#             a simulated persistence domain, not the file, and
#             TestAsyncEngines (every data mover engine; 1 minute under
#             TCG). PMEM_ALL=1 runs them here too (about 5 more minutes).
#   eadr      (not in make test; make test-pmem-eadr) the pmem suite on a
#             QEMU NVDIMM declared with nvdimm-persistence=cpu: the region
#             must report "cpu_cache", a writer must persist with a fence
#             alone (eADR), and streamcli ls must say "fence".
#
# Test binaries are built here on the host (Go under TCG would compile for
# minutes) into a directory under bin/vm/ that the VM sees, removed after.
# RPSTREAM_SKIP_VM=1: where QEMU or the kernel is missing, say so and
# succeed instead of failing (scripts/vm.sh). VM_TIMEOUT bounds the VM
# (default 900 s).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: scripts/vm-tests.sh softroce|pmem..." >&2; exit 2; }
export VM_SKIP_OK="${RPSTREAM_SKIP_VM:-0}"

flags=() softroce=0 pmem=0 eadr=0
for s in "$@"; do
	case "$s" in
	softroce) softroce=1; flags+=(--softroce) ;;
	pmem) pmem=1; flags+=(--dax) ;;
	eadr) eadr=1; flags+=(--eadr) ;;
	*) echo "vm-tests: unknown suite $s" >&2; exit 2 ;;
	esac
done

if [ "$eadr" = 1 ] && [ "$pmem" = 1 ]; then
	echo "vm-tests: pmem and eadr need different VMs (memmap= pmem, an NVDIMM): run them one at a time" >&2
	exit 2
fi

# Before building anything: can the VM run here?
rc=0
scripts/vm.sh --check "${flags[@]}" -- true || rc=$?
case $rc in
0) ;;
99) exit 0 ;; # skipped, said so
*) exit "$rc" ;;
esac

mkdir -p bin/vm
t="$(mktemp -d "$PWD/bin/vm/tests.XXXXXX")"
trap 'rm -rf "$t"' EXIT
tags="$(scripts/verbs-tags.sh)"
echo "vm-tests: building test binaries into $t (verbs tags $tags)"
if [ "$softroce" = 1 ]; then
	race=""
	[ "${VM_RACE:-0}" = 1 ] && race=-race
	go test -c $race -tags "$tags" -o "$t/verbs.test" ./rdma/verbs/
	go test -c -o "$t/integration.test" ./integration/
	go build -tags "$tags" -o "$t/" ./cmd/streamnode
fi
if [ "$pmem" = 1 ] || [ "$eadr" = 1 ]; then
	go test -c -o "$t/pmem.test" ./pmem/
	go test -c -o "$t/local.test" ./local/
	go build -o "$t/" ./cmd/streamcli
fi

# The guest part: plain sh inside the VM, in the repository's root.
cat >"$t/guest.sh" <<EOF
set -u
t=$t
softroce=$softroce pmem=$pmem eadr=$eadr pmem_all=${PMEM_ALL:-0}
EOF
cat >>"$t/guest.sh" <<'EOF'
fail=0
suite() { echo "=== vm-tests: $*"; }
bad() { echo "vm-tests: FAIL: $*"; fail=1; }
if [ "$softroce" = 1 ]; then
	suite "rdma conformance over verbs on rxe0"
	out="$(cd rdma/verbs && RPSTREAM_VERBS_ADDR=10.77.0.1 "$t/verbs.test" -test.v -test.count=1 -test.timeout 6m 2>&1)"
	rc=$?
	echo "$out" | grep -v '^=== RUN'
	[ $rc = 0 ] || bad "the verbs conformance suite failed"
	echo "$out" | grep -q -- '--- PASS: TestConformance ' || bad "the verbs conformance suite did not run (see above)"
	suite "streamnodes with --rdma verbs on rxe0: kill and restart a follower"
	before="$(cat /sys/class/infiniband/rxe0/ports/1/hw_counters/sent_pkts)"
	# The catalog's default timing (100 ms ticks, 3 s leases): under TCG
	# the loopback timing's 20 ms ticks elect too often (a node once
	# stayed behind the catalog's commit for the whole test).
	(cd integration && RPSTREAM_TEST_NODE_ARGS="${RPSTREAM_TEST_NODE_ARGS:---catalog-timing default}" \
		RPSTREAM_TEST_SOFTROCE_HOSTS="$VM_SOFTROCE_ADDRS" RPSTREAM_STREAMNODE="$t/streamnode" RPSTREAM_TEST_LOG_DIR="$VM_RUN" \
		"$t/integration.test" -test.run '^TestKillReplicaSoftRoCE$' -test.v -test.count=1 -test.timeout 7m 2>&1) || bad "TestKillReplicaSoftRoCE failed"
	after="$(cat /sys/class/infiniband/rxe0/ports/1/hw_counters/sent_pkts)"
	echo "vm-tests: rxe0 sent $((after - before)) RoCE packets during the cluster test"
	[ $((after - before)) -gt 1000 ] || bad "rxe0 sent only $((after - before)) packets: the replication did not go over rxe"
fi
if [ "$pmem" = 1 ]; then
	export TMPDIR=/mnt/dax RPSTREAM_TEST_DAX=1
	suite "pmem on DAX (TMPDIR=$TMPDIR)"
	(cd pmem && "$t/pmem.test" -test.v -test.count=1 -test.timeout 5m >"$t/pmem.log" 2>&1) || bad "the pmem suite failed on DAX"
	grep -v '^=== RUN' "$t/pmem.log"
	skip='^(TestCrashConsistency.*|TestCopyDamageSweep|TestDamageSweep|TestAsyncEngines)$'
	[ "$pmem_all" = 1 ] && skip='^$'
	suite "local on DAX, kill -9 included (skipping $skip)"
	(cd local && "$t/local.test" -test.v -test.count=1 -test.skip "$skip" -test.timeout 12m >"$t/local.log" 2>&1) || bad "the local suite failed on DAX"
	grep -E '^(--- |PASS|FAIL|ok|panic)|kill_test' "$t/local.log"
	suite "streamcli ls on a DAX stream reports the writer's mode"
	d="$(mktemp -d /mnt/dax/ls.XXXXXX)"
	"$t/streamcli" --data "$d" create s >/dev/null && "$t/streamcli" --data "$d" append s a b c >/dev/null || bad "streamcli on DAX"
	ls_out="$("$t/streamcli" --data "$d" ls)"
	echo "$ls_out"
	echo "$ls_out" | awk 'NR > 1 && $1 == "s" { print $NF }' | grep -qx flush || bad "streamcli ls on DAX does not say flush"
fi
if [ "$eadr" = 1 ]; then
	export TMPDIR=/mnt/dax RPSTREAM_TEST_DAX=1
	suite "pmem on DAX on an NVDIMM whose persistence domain is the CPU cache"
	grep -qx cpu_cache /sys/bus/nd/devices/region*/persistence_domain || bad "the NVDIMM region does not report cpu_cache"
	(cd pmem && "$t/pmem.test" -test.v -test.count=1 -test.timeout 5m >"$t/pmem.log" 2>&1) || bad "the pmem suite failed on the eADR NVDIMM"
	grep -v '^=== RUN' "$t/pmem.log"
	d="$(mktemp -d /mnt/dax/ls.XXXXXX)"
	"$t/streamcli" --data "$d" create s >/dev/null && "$t/streamcli" --data "$d" append s a >/dev/null || bad "streamcli on DAX"
	ls_out="$("$t/streamcli" --data "$d" ls)"
	echo "$ls_out"
	echo "$ls_out" | awk 'NR > 1 && $1 == "s" { print $NF }' | grep -qx fence || bad "streamcli ls on an eADR NVDIMM does not say fence"
fi
[ $fail = 0 ] && echo "vm-tests: PASS"
exit $fail
EOF

scripts/vm.sh "${flags[@]}" --timeout "${VM_TIMEOUT:-900}" -- "sh $t/guest.sh"
