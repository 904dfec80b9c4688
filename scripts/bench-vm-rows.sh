#!/usr/bin/env bash
# scripts/bench-vm-rows.sh: issue 14's four bench cluster rows with the tcp
# provider and with verbs on SoftRoCE, inside one VM (scripts/vm.sh
# --softroce), so that verbs can be given as a ratio to tcp:
#
#   64 clients, a connection each, 128 B     --clients 64 --conns 64 --size 128
#   1 client, 128 B (p50 latency)            --clients 1 --size 128
#   64 clients, a connection each, 64 KiB    --clients 64 --conns 64 --size 64k
#   64 clients, one shared connection, 128 B --clients 64 --size 128
#
# Three streamnodes (replicas 3, acks quorum, data on the guest's
# /dev/shm) on rxe0's addresses 10.77.0.1-3, started by bench cluster
# with --node-args "--rdma tcp" or "--rdma verbs" and the catalog's
# default timing with a 10 s lease (--catalog-timing default --lease-ttl
# 10s: the loopback timing's 1 s leases expire under TCG on a busy host,
# and the stream changes leader mid-run); for each row and round
# tcp then verbs back to back. Each run is bounded by --duration
# (BENCH_DURATION, default 5s) after its warm-up: under TCG everything is
# 10 to 50 times slower. ROUNDS (default 3) rounds. Prints one line per
# run: "row ROW provider P round K sent_pkts N JSON", N being rxe0's
# packets sent during the run (0 for tcp, many for verbs), JSON bench
# cluster's result, whose "rdma" is the provider the members logged. The
# members' logs of each run are kept in $VM_RUN/logs/ROW-P-K (the VM's run
# directory under bin/vm/, which the host sees), their data removed.
#
# On the host (builds with the verbs tags, then one VM):
#   go build -tags "$(scripts/verbs-tags.sh)" -o bin/ ./cmd/streamcli ./cmd/streamnode
#   scripts/vm.sh --softroce --timeout 1500 -- scripts/bench-vm-rows.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -e /sys/class/infiniband/rxe0 ] || { echo "bench-vm-rows: no rxe0: run it inside scripts/vm.sh --softroce" >&2; exit 2; }
rounds="${ROUNDS:-3}" dur="${BENCH_DURATION:-5s}"
hosts=10.77.0.1,10.77.0.2,10.77.0.3
pkts=/sys/class/infiniband/rxe0/ports/1/hw_counters/sent_pkts
rows=(
	"conns64-128|--clients 64 --conns 64 --size 128 --count 1000000"
	"client1-128|--clients 1 --size 128 --count 1000000"
	"conns64-64k|--clients 64 --conns 64 --size 64k --count 1000000"
	"shared64-128|--clients 64 --size 128 --count 1000000"
)
echo "bench-vm-rows: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $rounds round(s) of $dur, $(date -u)"
for k in $(seq 1 "$rounds"); do
	for row in "${rows[@]}"; do
		name="${row%%|*}" args="${row#*|}"
		for p in tcp verbs; do
			before="$(cat "$pkts")"
			# shellcheck disable=SC2086 # args are words
			out="$(bin/streamcli bench cluster $args --replicas 3 --acks quorum --duration "$dur" \
				--hosts "$hosts" --node-args "--rdma $p --catalog-timing default --lease-ttl 10s" --keep --json)"
			after="$(cat "$pkts")"
			kept="$(printf '%s' "$out" | sed -n 's/.*"kept":"\([^"]*\)".*/\1/p')"
			if [ -n "$kept" ] && [ -d "$kept" ]; then
				logs="${VM_RUN:-/tmp}/logs/$name-$p-$k"
				mkdir -p "$logs"
				cp "$kept"/*.log "$logs"/
				rm -rf "$kept"
			fi
			echo "row $name provider $p round $k sent_pkts $((after - before)) $out"
		done
	done
done
echo "bench-vm-rows: done, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u)"
