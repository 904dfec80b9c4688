#!/usr/bin/env bash
# Installs what building and testing rpstream needs on a Debian machine:
# Debian packages (only those missing, so a prepared machine needs no
# network) and the pinned Go tools. Called by `make deps`, which every other
# make target depends on.
set -euo pipefail

pkgs=(gcc make git ca-certificates libibverbs-dev librdmacm-dev protobuf-compiler iproute2)
# The partition tests (internal/netlab): network namespaces joined by a
# bridge, cut with nftables rules, entered with nsenter.
pkgs+=(nftables util-linux)
# The VM of make test-softroce and test-pmem (scripts/vm.sh): QEMU, Debian's
# stock kernel (6.1: rdma_rxe, DAX; it is only booted inside QEMU, never on
# this machine), a static busybox for its initramfs, and the tools the
# guest runs from this machine's / (rdma-core's rxe driver, ibv_devinfo,
# ndctl, mkfs.ext4, modprobe).
pkgs+=(qemu-system-x86 linux-image-amd64 busybox-static rdma-core ibverbs-providers ibverbs-utils ndctl e2fsprogs kmod)
# Go: /usr/local/go when present; otherwise Debian's golang-go, which
# fetches the toolchain go.mod names (go1.26.x) from the Go module proxy
# on first use (GOTOOLCHAIN=auto, Go 1.21 and later: Debian 13 "trixie").
if [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
elif ! command -v go >/dev/null 2>&1; then
	pkgs+=(golang-go)
fi
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
	echo "deps: Go is not installed and Debian's golang-go did not install it" >&2
	exit 1
fi
if ! GOTOOLCHAIN=auto go version >/dev/null 2>&1; then
	echo "deps: $(go version 2>&1) cannot build this module (go.mod asks for $(awk '/^go /{print $2}' go.mod)); install Go 1.21 or later, which fetches the right toolchain itself" >&2
	exit 1
fi
go mod download

# Pinned Go tools. protoc-gen-go matches the google.golang.org/protobuf
# version in go.mod; generated code is committed (make proto regenerates).
PROTOC_GEN_GO_VERSION=v1.36.12
gobin="$(go env GOPATH)/bin"
if [ "$("$gobin/protoc-gen-go" --version 2>/dev/null | awk '{print $2}')" != "$PROTOC_GEN_GO_VERSION" ]; then
	echo "deps: installing protoc-gen-go $PROTOC_GEN_GO_VERSION"
	go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi
# protoc-gen-go-grpc generates the gRPC service code of api/; its output
# needs google.golang.org/grpc v1.64 or later (go.mod pins the runtime).
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
if [ "$("$gobin/protoc-gen-go-grpc" --version 2>/dev/null | awk '{print $2}')" != "${PROTOC_GEN_GO_GRPC_VERSION#v}" ]; then
	echo "deps: installing protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION"
	go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
fi
