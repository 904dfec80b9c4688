#!/usr/bin/env bash
# The main job on embedded defaults: streamcli on a local data directory,
# with no server. Run by `make demo` (which builds bin/streamcli first):
#   scripts/demo.sh [DATA_DIR]     (default ./rpstream-data)
# It creates the stream "demo" (replacing the one an earlier run made),
# appends, tails, follows, lists and benchmarks.
set -euo pipefail

data=${1:-./rpstream-data}
mkdir -p "$data"
data=$(cd "$data" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
cli=${STREAMCLI:-$root/bin/streamcli}
if [ ! -x "$cli" ]; then
	echo "building $cli"
	(cd "$root" && go build -o bin/ ./cmd/streamcli)
fi
export RPSTREAM_DATA=$data

if [ -t 1 ]; then
	say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	say() { printf '\n== %s\n' "$*"; }
fi
# show prints a command as one would type it, then runs it.
show() {
	local line="$ streamcli" a
	for a in "$@"; do
		case $a in
		*[[:space:]]*) line+=" \"$a\"" ;;
		*) line+=" $a" ;;
		esac
	done
	printf '%s\n' "$line"
	"$cli" "$@"
}

tailpid=
cleanup() {
	if [ -n "$tailpid" ]; then
		kill "$tailpid" 2>/dev/null || true
	fi
}
trap cleanup EXIT

say "Data directory: $data (one file per stream)"
if [ -e "$data/demo.stream" ]; then
	echo "(removing the stream \"demo\" of an earlier run)"
	rm -f "$data/demo.stream"
fi

say "Create a stream"
show create demo --region-size 64k

say "Append messages: each is one entry; streamcli prints its position once it is durable"
show append demo "hello, rpstream" "a second message"

say "Append lines from standard input: one entry per line"
printf '$ printf ... | streamcli append demo\n'
printf 'line one\nline two\nline three\n' | "$cli" append demo

say "Read the stream back"
show tail demo

say "The same as JSON, one object per line (data in base64), from position 3"
show tail demo --from 3 --output json

say "Follow the stream in the background (tail -f) while appending more"
printf '$ streamcli tail -f demo --from -1 &\n'
"$cli" tail -f demo --from -1 > >(sed -u 's/^/    [tail -f] /') &
tailpid=$!
sleep 0.5
for i in 1 2 3; do
	printf '$ streamcli append demo "event %d"\n' "$i"
	"$cli" append demo "event $i"
	sleep 0.3
done
echo "(stopping the background tail -f, PID $tailpid)"
kill "$tailpid"
wait "$tailpid" || true
tailpid=

say "List the streams, then the regions of one"
show ls
echo
show ls demo

say "Benchmark: 64-byte appends, each durable, in memory (tmpfs)"
show bench local --count 300000 --size 64 --writers 1

say "Benchmark: the same on the data directory's disk (one msync per append, shared by 16 writers)"
show bench local --count 4000 --size 64 --writers 16 --dir "$data"

say "Done. Try: $(basename "$cli") --help   (streams are in $data)"
