#!/usr/bin/env bash
# Regenerates the Go code of every .proto file with the pinned protoc-gen-go
# and protoc-gen-go-grpc (installed by scripts/deps.sh): messages for every
# file, and gRPC service code for the files that declare a service.
# `make proto`; CI checks that the committed code is current.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(go env GOPATH)/bin:$PATH"
want="$(sed -n 's/^PROTOC_GEN_GO_VERSION=//p' scripts/deps.sh)"
have="$(protoc-gen-go --version 2>/dev/null | awk '{print $2}')"
if [ "$have" != "$want" ]; then
	echo "proto: protoc-gen-go $have found, $want pinned; run scripts/deps.sh" >&2
	exit 1
fi
want_grpc="$(sed -n 's/^PROTOC_GEN_GO_GRPC_VERSION=v//p' scripts/deps.sh)"
have_grpc="$(protoc-gen-go-grpc --version 2>/dev/null | awk '{print $2}')"
if [ "$have_grpc" != "$want_grpc" ]; then
	echo "proto: protoc-gen-go-grpc $have_grpc found, $want_grpc pinned; run scripts/deps.sh" >&2
	exit 1
fi
for f in $(git ls-files --cached --others --exclude-standard '*.proto'); do
	protoc --go_out=. --go_opt=paths=source_relative "$f"
	if grep -q '^service ' "$f"; then
		protoc --go-grpc_out=. --go-grpc_opt=paths=source_relative "$f"
	fi
done
