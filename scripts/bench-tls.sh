#!/usr/bin/env bash
# TLS's cost on replicated appends: `streamcli bench cluster` (3 nodes,
# acks quorum, 64 clients, 128-byte entries) with TLS off and on, RUNS
# times each (default 5), in one invocation of the same build, in the
# order off on on off, on off off on, ... so that neither mode always
# runs first. Prints every run and the medians of the throughput and of
# the CPU all processes (nodes and clients) used per appended entry.
# ON_FLAGS are the flags of the "on" runs (default --tls; ON_FLAGS="--tls
# --admin" measures TLS and metrics together, the admin listener scraped
# every second).
#   scripts/bench-tls.sh [RUNS] [COUNT]
set -euo pipefail
runs=${1:-5}
count=${2:-200000}
root=$(cd "$(dirname "$0")/.." && pwd)
cli=${STREAMCLI:-$root/bin/streamcli}
node=${STREAMNODE:-$root/bin/streamnode}
if [ ! -x "$cli" ] || [ ! -x "$node" ]; then
	(cd "$root" && go build -o bin/ ./cmd/streamcli ./cmd/streamnode)
fi
field() { printf '%s' "$1" | grep -o "\"$2\": *[0-9.]*" | grep -o '[0-9.]*$'; }
declare -A rates cpus
order=(off on on off)
for i in $(seq "$runs"); do
	first=${order[$(((i - 1) % 2 * 2))]}
	second=${order[$(((i - 1) % 2 * 2 + 1))]}
	for mode in "$first" "$second"; do
		flag=
		[ "$mode" = on ] && flag=${ON_FLAGS:---tls}
		out=$("$cli" bench cluster --clients 64 --size 128 --count "$count" --acks quorum --replicas 3 --streamnode "$node" $flag --json 2>/dev/null)
		rate=$(field "$out" entries_per_sec)
		cpu=$(awk -v a="$(field "$out" nodes_cpu_us_per_entry)" -v b="$(field "$out" client_cpu_us_per_entry)" 'BEGIN {printf "%.2f", a+b}')
		printf 'run %d  %-3s  %10.0f entries/s  %6.2f us CPU/entry\n' "$i" "$mode" "$rate" "$cpu"
		rates[$mode]+="$rate "
		cpus[$mode]+="$cpu "
	done
done
median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
awk -v off="$(median "${rates[off]}")" -v on="$(median "${rates[on]}")" \
	-v coff="$(median "${cpus[off]}")" -v con="$(median "${cpus[on]}")" -v n="$runs" -v f="${ON_FLAGS:---tls}" \
	'BEGIN {printf "median of %d: off %.0f entries/s, on (%s) %.0f entries/s: costs %.1f%% of the throughput; CPU per entry %.2f us off, %.2f us on: %+.1f%%\n", n, off, f, on, 100*(off-on)/off, coff, con, 100*(con-coff)/coff}'
