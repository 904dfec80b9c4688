#!/usr/bin/env bash
# scripts/bench-floor.sh: issue 14's four bench cluster rows with the
# stream replicated three times, with one replica only (no replication:
# the client's gRPC call, the node's handler and its local durable
# append), and, for the rows of independent clients, against a bare gRPC
# echo server (internal/tools/grpcecho: nothing stored), alternated row by
# row in one run on this machine, so that what replication adds to each
# row, and the floor gRPC alone sets on this machine, are read side by
# side:
#
#   64 clients, a connection each, 128 B     --clients 64 --conns 64 --size 128
#   1 client, 128 B (p50 latency)            --clients 1 --size 128
#   64 clients, a connection each, 64 KiB    --clients 64 --conns 64 --size 64k
#   64 clients, one shared connection, 128 B --clients 64 --size 128
#
# Three streamnodes on loopback started by bench cluster for each run
# (data on /dev/shm, acks quorum, tcp provider), every run bounded by
# --duration (BENCH_DURATION, default 5s) after its warm-up; ROUNDS
# (default 3) rounds. Prints one line per run: "row ROW replicas R round K
# JSON", JSON being bench cluster's result, or "row ROW echo round K JSON"
# with grpcecho's.
#
#   go build -o bin/ ./cmd/streamcli ./cmd/streamnode ./internal/tools/grpcecho
#   scripts/bench-floor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}" dur="${BENCH_DURATION:-5s}"
[ -x bin/streamcli ] && [ -x bin/streamnode ] && [ -x bin/grpcecho ] || { echo "bench-floor: build the binaries first: go build -o bin/ ./cmd/streamcli ./cmd/streamnode ./internal/tools/grpcecho" >&2; exit 2; }
# name|bench cluster's flags|grpcecho's flags (none: no echo row)
rows=(
	"conns64-128|--clients 64 --conns 64 --size 128 --count 1000000|--conns 64 --size 128"
	"client1-128|--clients 1 --size 128 --count 1000000|--conns 1 --size 128"
	"conns64-64k|--clients 64 --conns 64 --size 64k --count 1000000|--conns 64 --size 65536"
	"shared64-128|--clients 64 --size 128 --count 1000000|"
)
echo "bench-floor: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $rounds round(s) of $dur, $(date -u)"
for k in $(seq 1 "$rounds"); do
	for row in "${rows[@]}"; do
		name="${row%%|*}" rest="${row#*|}"
		args="${rest%%|*}" eflags="${rest#*|}"
		for r in 3 1; do
			# shellcheck disable=SC2086 # args are words
			out="$(bin/streamcli bench cluster $args --replicas "$r" --acks quorum --duration "$dur" \
				--streamnode bin/streamnode --json)"
			echo "row $name replicas $r round $k $out"
		done
		if [ -n "$eflags" ]; then
			# shellcheck disable=SC2086 # echo's flags are words
			echo "row $name echo round $k $(bin/grpcecho $eflags --duration "$dur")"
		fi
	done
done
echo "bench-floor: done, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u)"
