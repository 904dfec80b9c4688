#!/usr/bin/env bash
# TLS's cost on replicated appends: `streamcli bench cluster` (3 nodes,
# acks quorum, 64 clients, 128-byte entries) with TLS off and on,
# alternating, RUNS times each (default 3), in one invocation of the same
# build; prints every run and the medians. ON_FLAGS are the flags of the
# "on" runs (default --tls; ON_FLAGS="--tls --admin" measures TLS and
# metrics together, the admin listener scraped every second).
#   scripts/bench-tls.sh [RUNS] [COUNT]
set -euo pipefail
runs=${1:-3}
count=${2:-200000}
root=$(cd "$(dirname "$0")/.." && pwd)
cli=${STREAMCLI:-$root/bin/streamcli}
node=${STREAMNODE:-$root/bin/streamnode}
if [ ! -x "$cli" ] || [ ! -x "$node" ]; then
	(cd "$root" && go build -o bin/ ./cmd/streamcli ./cmd/streamnode)
fi
declare -A rates
for i in $(seq "$runs"); do
	for mode in off on; do
		flag=
		[ "$mode" = on ] && flag=${ON_FLAGS:---tls}
		out=$("$cli" bench cluster --clients 64 --size 128 --count "$count" --acks quorum --replicas 3 --streamnode "$node" $flag --json 2>/dev/null)
		rate=$(printf '%s' "$out" | grep -o '"entries_per_sec": *[0-9.]*' | grep -o '[0-9.]*$')
		printf 'run %d  %-3s  %10.0f entries/s\n' "$i" "$mode" "$rate"
		rates[$mode]+="$rate "
	done
done
median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
off=$(median "${rates[off]}")
on=$(median "${rates[on]}")
awk -v off="$off" -v on="$on" -v n="$runs" -v f="${ON_FLAGS:---tls}" 'BEGIN {printf "median of %d: off %.0f entries/s, on (%s) %.0f entries/s: costs %.1f%%\n", n, off, f, on, 100*(off-on)/off}'
