#!/usr/bin/env bash
# Runs every fuzz target of the project for $1 (default 30s) each: the
# parsers of outside bytes (stream files, rdma frames and descriptors, the
# handshake, control messages, DSA sysfs). Failing inputs land in the
# package's testdata/fuzz and are then run by every `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-30s}
status=0
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //' | sort -u); do
		echo "== $pkg $f ($t)"
		go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg" || status=1
	done
done
exit $status
