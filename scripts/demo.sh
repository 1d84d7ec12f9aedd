#!/usr/bin/env bash
# Shoal's main job on one machine: build, start a daemon, make a swarm, run a replicated
# service, watch it converge, scale it, read its logs, kill a task and watch it be replaced.
# Everything lives in a temporary directory and is stopped when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
SHOAL="$PWD/target/release/shoal"
WORK="$(mktemp -d /tmp/shoal-demo.XXXXXX)"
export SHOAL_HOST="unix://$WORK/shoal.sock"

cleanup() {
    "$SHOAL" swarm leave --force >/dev/null 2>&1 || true
    [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

"$SHOAL" daemon --data-root "$WORK/data" -H "$SHOAL_HOST" --log-level warn 2>"$WORK/daemon.log" &
DAEMON=$!
for _ in $(seq 50); do "$SHOAL" version >/dev/null 2>&1 && break; sleep 0.1; done

step "$SHOAL" swarm init --advertise-addr 127.0.0.1
step "$SHOAL" node ls
step "$SHOAL" service create --name hello --replicas 3 busybox \
    sh -c 'while true; do echo "hello from $HOSTNAME"; sleep 2; done'
step "$SHOAL" service ls
step "$SHOAL" service ps hello
step "$SHOAL" service scale hello=5
step "$SHOAL" service logs --tail 1 hello

victim=$(pgrep -f 'echo "hello from' | head -1)
printf '\n# killing one task process (pid %s); the restart policy replaces it\n' "$victim"
kill -9 "$victim"
for _ in $(seq 100); do
    "$SHOAL" service ps hello | grep -q 'non-zero exit (137)' && \
    [ "$("$SHOAL" service ps -q -f desired-state=running hello | wc -l)" = 5 ] && \
    "$SHOAL" service ls | grep -q '5/5' && break
    sleep 0.2
done
step "$SHOAL" service ps hello
step "$SHOAL" service ls
step "$SHOAL" service rm hello
echo
echo "The same API answers the docker CLI: docker -H $SHOAL_HOST service ls"
