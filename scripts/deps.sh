#!/usr/bin/env bash
# Installs what building and testing rpstream needs on a Debian machine:
# Debian packages (only those missing, so a prepared machine needs no
# network) and the pinned Go tools. Called by `make deps`, which every other
# make target depends on.
set -euo pipefail

pkgs=(gcc make libibverbs-dev librdmacm-dev protobuf-compiler iproute2)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing Debian packages: ${missing[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
	echo "deps: Go is not installed (need Go 1.26 or later on PATH)" >&2
	exit 1
fi
go mod download

# Pinned Go tools. protoc-gen-go matches the google.golang.org/protobuf
# version in go.mod; generated code is committed (make proto regenerates).
PROTOC_GEN_GO_VERSION=v1.36.11
gobin="$(go env GOPATH)/bin"
if [ "$("$gobin/protoc-gen-go" --version 2>/dev/null | awk '{print $2}')" != "$PROTOC_GEN_GO_VERSION" ]; then
	echo "deps: installing protoc-gen-go $PROTOC_GEN_GO_VERSION"
	go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi
