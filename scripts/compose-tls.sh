#!/usr/bin/env bash
# The development CA and certificates docker-compose.yml mounts at /tls:
# one per member (n1, n2, n3, backup; naming the members' addresses on the
# compose network and 127.0.0.1) and the client "admin". Run by
# `make compose-up`; an existing directory is kept (delete it for new
# ones). Never use these outside a development machine.
#   scripts/compose-tls.sh [DIR]    (default $RPSTREAM_TLS_DIR, else ./.compose-tls)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-${RPSTREAM_TLS_DIR:-$root/.compose-tls}}
node=${STREAMNODE:-$root/bin/streamnode}
net=${RPSTREAM_NET:-10.213.7}
if [ -f "$dir/ca.crt" ]; then
	exit 0
fi
"$node" dev-ca --dir "$dir" --nodes n1,n2,n3,backup --clients admin \
	--hosts "$net.11,$net.12,$net.13,$net.14"
# The containers run as uid 65532 and read the keys through a read-only
# bind mount: they must be world-readable. ca.key stays private.
chmod 0644 "$dir"/n1.key "$dir"/n2.key "$dir"/n3.key "$dir"/backup.key "$dir"/admin.key
chmod 0755 "$dir"
