#!/usr/bin/env bash
# Shoal's main job, as Docker's get-started guide (part 4) does it: build, make two machines
# (network namespaces with their own address and daemon), a swarm of them, deploy the guide's
# docker-compose.yml as a stack, and see port 4000 answer on both machines, balanced over the
# five replicas wherever they run; then scale, drain, stop a machine, remove the stack.
# It runs examples/getstarted/getstarted.sh (see its README) on a private bridge and subnet
# and removes every machine, namespace and file it made when it ends. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "demo: machines are network namespaces: run as root (sudo $0)" >&2
    exit 2
fi
for tool in ip nft nsenter curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "demo: $tool is missing (apt-get install -y iproute2 nftables util-linux curl)" >&2
        exit 2
    fi
done
cargo build --release --quiet
STORAGE="$(mktemp -d /tmp/shoal-demo.XXXXXX)"
trap 'rm -rf "$STORAGE"' EXIT
SHOAL="$PWD/target/release/shoal" \
    SHOAL_MACHINE_STORAGE_PATH="$STORAGE" \
    GETSTARTED_VM1=myvm1 GETSTARTED_VM2=myvm2 \
    GETSTARTED_BRIDGE=shoal-demo-br GETSTARTED_SUBNET=10.99.77.0/24 \
    bash examples/getstarted/getstarted.sh
