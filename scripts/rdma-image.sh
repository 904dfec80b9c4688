#!/usr/bin/env bash
# make images-rdma: the image variant for hosts with RDMA (SoftRoCE or a
# NIC): streamnode and streamcli built with the verbs provider (cgo,
# libibverbs and librdmacm linked dynamically), the shared libraries they
# and rdma-core's user-space drivers need, and the drivers' configuration
# (/etc/libibverbs.d), FROM scratch like the default image
# (deploy/Dockerfile.rdma). The build context is staged in bin/rdma-image/.
#
#   scripts/rdma-image.sh [IMAGE]     (default rpstream:rdma-dev)
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-rpstream:rdma-dev}"
ctx=bin/rdma-image
rm -rf "$ctx"
mkdir -p "$ctx/root/data" "$ctx/root/etc"
tags="$(scripts/verbs-tags.sh)"
go build -trimpath -tags "$tags" -ldflags='-s -w' -o "$ctx/root/" ./cmd/streamnode ./cmd/streamcli

drivers=(/usr/lib/*-linux-gnu/libibverbs/*.so)
[ -e "${drivers[0]}" ] || { echo "rdma-image: no rdma-core user-space drivers (Debian package ibverbs-providers)" >&2; exit 1; }
# Every library the binaries and the drivers load, and the dynamic loader,
# at their paths on this machine.
libs="$( (ldd "$ctx/root/streamnode" "$ctx/root/streamcli" "${drivers[@]}" 2>/dev/null || true) |
	awk '/=> \// { print $3 } /^\t\// { print $1 }' | sort -u)"
for f in $libs "${drivers[@]}"; do
	mkdir -p "$ctx/root$(dirname "$f")"
	cp -L "$f" "$ctx/root$f"
done
cp -r /etc/libibverbs.d "$ctx/root/etc/"
cp deploy/Dockerfile.rdma "$ctx/Dockerfile"
docker build -t "$image" "$ctx"
echo "rdma-image: built $image"
