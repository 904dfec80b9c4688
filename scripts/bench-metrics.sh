#!/usr/bin/env bash
# What metrics cost: `streamcli bench cluster` (3 nodes, quorum, 64
# clients, 128 B) on the same build without and with --admin (each node's
# admin listener on, metrics counted, /metrics scraped every second),
# alternated ROUNDS times (default 3) in one run; prints each run and the
# medians. Needs jq.
#   scripts/bench-metrics.sh [ROUNDS] [COUNT]
set -euo pipefail
rounds=${1:-3}
count=${2:-300000}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/" ./cmd/streamcli ./cmd/streamnode)
run() {
	"$bin/streamcli" bench cluster --streamnode "$bin/streamnode" --clients 64 --size 128 \
		--count "$count" --acks quorum --replicas 3 --json "$@" 2>/dev/null | jq -r .entries_per_sec
}
off=() on=()
for r in $(seq "$rounds"); do
	off+=("$(run)")
	on+=("$(run --admin)")
	echo "round $r: off ${off[-1]} entries/s, on ${on[-1]} entries/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mo=$(median "${off[@]}") mn=$(median "${on[@]}")
echo "median: off $mo entries/s, on $mn entries/s, cost $(awk -v a="$mo" -v b="$mn" 'BEGIN {printf "%.1f%%", (a-b)/a*100}')"
