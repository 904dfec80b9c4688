#!/usr/bin/env bash
# The main job on embedded defaults: streamcli on a local data directory,
# with no server. Run by `make demo` (which builds bin/streamcli first):
#   scripts/demo.sh [DATA_DIR]     (default ./rpstream-data)
# It creates the stream "demo" (replacing the one an earlier run made),
# appends, tails, follows, lists and benchmarks; then it runs a cluster of
# three streamnodes and a backup target on loopback (ports from
# $RPSTREAM_DEMO_PORT, default 27400, +11..+34) with TLS on (a development
# CA made by `streamnode dev-ca` for the run), a cluster secret from a
# file, and an ACL; it replicates a stream, kills a replica, and
# benchmarks replicated appends. Each node serves its admin listener
# (/metrics, /readyz; plain HTTP) on 127.0.0.1, port base+41..+44.
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
		"" | *[[:space:]]*) line+=" \"$a\"" ;;
		*) line+=" $a" ;;
		esac
	done
	printf '%s\n' "$line"
	"$cli" "$@"
}

node=${STREAMNODE:-$root/bin/streamnode}
tailpid=
nodepids=()
cleanup() {
	if [ -n "$tailpid" ]; then
		kill "$tailpid" 2>/dev/null || true
	fi
	for p in "${nodepids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${nodepids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
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

if [ ! -x "$node" ]; then
	echo "building $node"
	(cd "$root" && go build -o bin/ ./cmd/streamnode)
fi
base=${RPSTREAM_DEMO_PORT:-27400}
cdir=$data/cluster
rm -rf "$cdir"
mkdir -p "$cdir"
tls=$cdir/tls
join=127.0.0.1:$((base + 31)),127.0.0.1:$((base + 32)),127.0.0.1:$((base + 33)),127.0.0.1:$((base + 34))
# start_node I starts member nI (n4 is the backup target), logging to
# $cdir/nI.log; its PID goes to nodepids[I-1].
start_node() {
	local i=$1 role=node
	[ "$i" = 4 ] && role=backup
	printf '$ streamnode --name n%d --role %s --data %s --client-addr 127.0.0.1:%d --peer-addr 127.0.0.1:%d --gossip-addr 127.0.0.1:%d --admin-addr 127.0.0.1:%d --join %s --voters n1,n2,n3 --secret-file %s --tls-ca %s --tls-cert %s --tls-key %s --acl %s &\n' \
		"$i" "$role" "$cdir/n$i" $((base + 10 + i)) $((base + 20 + i)) $((base + 30 + i)) $((base + 40 + i)) "$join" "$cdir/secret" "$tls/ca.crt" "$tls/n$i.crt" "$tls/n$i.key" "$cdir/acl.json"
	"$node" --name "n$i" --role "$role" --data "$cdir/n$i" --client-addr "127.0.0.1:$((base + 10 + i))" \
		--peer-addr "127.0.0.1:$((base + 20 + i))" --gossip-addr "127.0.0.1:$((base + 30 + i))" \
		--admin-addr "127.0.0.1:$((base + 40 + i))" --join "$join" --voters n1,n2,n3 --secret-file "$cdir/secret" \
		--tls-ca "$tls/ca.crt" --tls-cert "$tls/n$i.crt" --tls-key "$tls/n$i.key" --acl "$cdir/acl.json" 2>>"$cdir/n$i.log" &
	nodepids[$((i - 1))]=$!
}
# wait_alive N waits (at most 15 s) until n1 lists N members alive and
# the catalog knows N nodes.
wait_alive() {
	for _ in $(seq 75); do
		if [ "$("$cli" --node "127.0.0.1:$((base + 11))" members 2>/dev/null | grep -c ' alive ')" -ge "$1" ] &&
			[ "$("$cli" --node "127.0.0.1:$((base + 11))" cluster --output json 2>/dev/null | grep -o '"incarnation": *"[0-9a-f]\{16\}"' | grep -c .)" -ge "$1" ]; then
			return 0
		fi
		sleep 0.2
	done
	echo "the cluster did not form; logs: $cdir/n*.log" >&2
	return 1
}

say "Security: a development CA, a certificate per node and for the client \"admin\", a cluster secret in a file"
printf '$ streamnode dev-ca --dir %s --nodes n1,n2,n3,n4 --clients admin\n' "$tls"
"$node" dev-ca --dir "$tls" --nodes n1,n2,n3,n4 --clients admin
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cdir/secret")
echo "(the secret: 32 random bytes, hex, in $cdir/secret; never on the command line, where ps shows it)"
say "An ACL: admin may do anything; the holder of a token may only read the stream \"orders\""
(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cdir/reader.token")
hash=$(sha256sum "$cdir/reader.token" | cut -d' ' -f1)
cat >"$cdir/acl.json" <<ACL
{
  "tokens": [{"identity": "reader", "sha256": "$hash"}],
  "grants": [
    {"identity": "admin", "streams": ["*"], "permissions": ["read", "append", "admin"]},
    {"identity": "reader", "streams": ["orders"], "permissions": ["read"]}
  ]
}
ACL
cat "$cdir/acl.json"
# streamcli's network mode reaches the nodes as admin from here on.
export RPSTREAM_TLS_CA=$tls/ca.crt RPSTREAM_TLS_CERT=$tls/admin.crt RPSTREAM_TLS_KEY=$tls/admin.key
echo "$ export RPSTREAM_TLS_CA=$tls/ca.crt RPSTREAM_TLS_CERT=$tls/admin.crt RPSTREAM_TLS_KEY=$tls/admin.key"

say "A cluster on loopback: three stream nodes and a backup target, TLS on (logs in $cdir)"
for i in 1 2 3 4; do
	start_node "$i"
done
wait_alive 4
n1=127.0.0.1:$((base + 11)) n2=127.0.0.1:$((base + 12)) n3=127.0.0.1:$((base + 13))
show --node "$n1" members
show --node "$n1" cluster

say "Create a stream with 3 replicas on n2: n2 leads it, the others hold copies"
show --node "$n2" create orders --replicas 3 --acks quorum

say "Append through n1 (it sends the client on to the leader), read from n3's copy"
show --node "$n1" append orders "order 1" "order 2" "order 3"
sleep 0.2
show --node "$n3" tail orders
show --node "$n1" status orders || [ $? = 3 ] # 3: under-replicated (a copy down or catching up)

say "Watch it: each node's admin listener serves /readyz and Prometheus /metrics"
echo "$ streamnode probe http://127.0.0.1:$((base + 42))/readyz"
"$node" probe "http://127.0.0.1:$((base + 42))/readyz"
echo "$ curl -s http://127.0.0.1:$((base + 42))/metrics | grep -E '^rpstream_(appends_total|streams_led|replica_commit_lag_entries|catalog_is_controller)'"
if command -v curl >/dev/null; then
	curl -s "http://127.0.0.1:$((base + 42))/metrics" | grep -E '^rpstream_(appends_total|streams_led|replica_commit_lag_entries|catalog_is_controller)' || true
else
	echo "(no curl here)"
fi

say "The token's holder may read orders, not append to it; without credentials, nothing"
show --node "$n1" --tls-cert "" --tls-key "" --token-file "$cdir/reader.token" tail orders
show --node "$n1" --tls-cert "" --tls-key "" --token-file "$cdir/reader.token" append orders "forged" || true
show --node "$n1" --tls-cert "" --tls-key "" members || true

say "Kill a replica (SIGKILL): a quorum, the leader and one copy, still acknowledges"
victim=n1
[ "$("$cli" --node "$n1" status orders | awk '/^leader/ {print $2}')" = n1 ] && victim=n3
vi=${victim#n}
echo "$ kill -9 <PID of $victim>"
kill -9 "${nodepids[$((vi - 1))]}"
wait "${nodepids[$((vi - 1))]}" 2>/dev/null || true
show --node "$n2" append orders "order 4" "order 5"

say "Restart it: the leader brings its copy up to date in the background"
start_node "$vi"
wait_alive 4
sleep 1
show --node "$n2" status orders || [ $? = 3 ]

say "Kill the leader (SIGKILL): once its lease at the controller runs out (3 s) a copy's holder takes the stream over; the client follows"
echo "$ kill -9 <PID of n2>"
kill -9 "${nodepids[1]}"
wait "${nodepids[1]}" 2>/dev/null || true
show --node "$n2,$n1,$n3" append orders "order 6"
show --node "$n1" status orders || [ $? = 3 ] # 3: under-replicated (a copy down or catching up)

say "Restart n2: it finds another leader named and holds a copy again"
start_node 2
wait_alive 4
show --node "$n1,$n3" append orders "order 7"
show --node "$n3" tail orders

say "Stop the cluster (SIGTERM: each node drains and leaves)"
for p in "${nodepids[@]}"; do
	kill "$p" 2>/dev/null || true
done
for p in "${nodepids[@]}"; do
	wait "$p" 2>/dev/null || true
done
nodepids=()

say "Benchmark: replicated appends, 128 bytes, quorum of 3, 16 clients (its own cluster on loopback, TLS on)"
show bench cluster --clients 16 --size 128 --count 40000 --acks quorum --replicas 3 --tls

say "Done. Try: $(basename "$cli") --help   (streams are in $data)"
