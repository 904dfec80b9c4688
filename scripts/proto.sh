#!/usr/bin/env bash
# Regenerates the Go code of every .proto file with the pinned protoc-gen-go
# (installed by scripts/deps.sh). `make proto`; CI checks that the
# committed code is current.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(go env GOPATH)/bin:$PATH"
want="$(sed -n 's/^PROTOC_GEN_GO_VERSION=//p' scripts/deps.sh)"
have="$(protoc-gen-go --version 2>/dev/null | awk '{print $2}')"
if [ "$have" != "$want" ]; then
	echo "proto: protoc-gen-go $have found, $want pinned; run scripts/deps.sh" >&2
	exit 1
fi
for f in $(git ls-files --cached --others --exclude-standard '*.proto'); do
	protoc --go_out=. --go_opt=paths=source_relative "$f"
done
