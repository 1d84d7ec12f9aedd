#!/usr/bin/env bash
# Docker's get-started part 4 ("Swarms") with Shoal, end to end: two machines, a swarm across
# them, the guide's docker-compose.yml (next to this script) deployed as the stack
# `getstartedlab` spread over both, scaled twice by editing the file and deploying again (the
# second time with `docker stack deploy` when the docker CLI is installed), drain, a stopped
# machine and its tasks moved, the machine back, `stack rm`, leaving the swarm and removing
# the machines. Every step is printed as `$ command` followed by what it printed;
# README.md next to this script walks through it. The steps run in a temporary directory that
# holds a copy of docker-compose.yml (the scaling steps edit the copy).
#
# Needs root (machines are network namespaces) and the `ip`, `unshare`, `nsenter`, `nft` and
# `curl` commands.
#
# Environment:
#   SHOAL                       the shoal binary (default: target/release/shoal of this
#                               checkout, else `shoal` on PATH)
#   SHOAL_MACHINE_STORAGE_PATH  where machines live (shoal's default: /var/lib/shoal/machines)
#   GETSTARTED_VM1, _VM2        machine names (default myvm1, myvm2)
#   GETSTARTED_BRIDGE           host bridge for `machine create --bridge` (default: shoal's)
#   GETSTARTED_SUBNET           subnet for `machine create --subnet` (default: shoal's)
#   GETSTARTED_WAIT             bound in seconds of each wait for the swarm to converge (90)
#   GETSTARTED_STEP_TIMEOUT     bound in seconds of each command (120)
#
# The machines it creates are removed when it ends, also on failure or Ctrl-C; it refuses to
# start when a machine of the same name already exists.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${SHOAL:-}" ]; then
    if [ -x "$HERE/../../target/release/shoal" ]; then
        SHOAL="$HERE/../../target/release/shoal"
    else
        SHOAL="$(command -v shoal || true)"
    fi
fi
if [ ! -f "$HERE/docker-compose.yml" ]; then
    echo "getstarted: no docker-compose.yml next to the script ($HERE)" >&2
    exit 2
fi
if [ -z "$SHOAL" ] || [ ! -x "$SHOAL" ]; then
    echo "getstarted: no shoal binary: build it (cargo build --release) or set SHOAL" >&2
    exit 2
fi
SHOAL="$(cd "$(dirname "$SHOAL")" && pwd)/$(basename "$SHOAL")"
VM1="${GETSTARTED_VM1:-myvm1}"
VM2="${GETSTARTED_VM2:-myvm2}"
WAIT="${GETSTARTED_WAIT:-90}"
STEP_TIMEOUT="${GETSTARTED_STEP_TIMEOUT:-120}"
CREATE_FLAGS=""
[ -n "${GETSTARTED_BRIDGE:-}" ] && CREATE_FLAGS+=" --bridge $GETSTARTED_BRIDGE"
[ -n "${GETSTARTED_SUBNET:-}" ] && CREATE_FLAGS+=" --subnet $GETSTARTED_SUBNET"
# A relative storage path is relative to where the script was started (the steps run
# elsewhere); an empty one means shoal's default.
if [ -n "${SHOAL_MACHINE_STORAGE_PATH:-}" ]; then
    SHOAL_MACHINE_STORAGE_PATH="$(realpath -m -- "$SHOAL_MACHINE_STORAGE_PATH")"
    export SHOAL_MACHINE_STORAGE_PATH
else
    unset SHOAL_MACHINE_STORAGE_PATH
fi

# `shoal` in the printed commands is this binary; the steps run in $BIN/work.
BIN="$(mktemp -d "${TMPDIR:-/tmp}/shoal-getstarted.XXXXXX")"
ln -s "$SHOAL" "$BIN/shoal"
export PATH="$BIN:$PATH"
mkdir "$BIN/work"
cp "$HERE/docker-compose.yml" "$BIN/work/"
cd "$BIN/work"
STACK=getstartedlab
SERVICE="${STACK}_web"
unset DOCKER_HOST SHOAL_HOST DOCKER_MACHINE_NAME

CREATED=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    unset DOCKER_HOST
    if [ "$rc" != 0 ]; then
        echo
        echo "# getstarted failed (exit $rc); the end of each machine's daemon log:"
        local root="${SHOAL_MACHINE_STORAGE_PATH:-/var/lib/shoal/machines}"
        for m in "${CREATED[@]}"; do
            echo "## $m"
            tail -n 20 "$root/$m/daemon.log" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' || true
        done
    fi
    for m in "${CREATED[@]}"; do
        if shoal machine status "$m" >/dev/null 2>&1; then
            timeout -k 5 60 shoal machine rm -f "$m" >/dev/null 2>&1 ||
                echo "# could not remove machine $m" >&2
        fi
    done
    rm -rf "$BIN"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi

# step CMD: prints `$ CMD`, runs it (bounded) and prints its output; OUT keeps the output.
step() {
    printf '\n%s$ %s%s\n' "$BOLD" "$1" "$PLAIN"
    local rc=0
    OUT="$(timeout --foreground -k 5 "$STEP_TIMEOUT" bash -c "$1" 2>&1)" || rc=$?
    [ -n "$OUT" ] && printf '%s\n' "$OUT"
    if [ "$rc" != 0 ]; then
        echo "# step failed (exit $rc): $1" >&2
        return "$rc"
    fi
}

# note TEXT: a comment between steps.
note() { printf '\n# %s\n' "$*"; }

# wait_until WHAT CMD: polls CMD (a shell condition) every half second, at most $WAIT seconds;
# on time-out, shows what the last try printed and what the manager sees.
wait_until() {
    local what="$1" cond="$2" deadline=$((SECONDS + WAIT)) last
    until last="$(timeout --foreground -k 5 30 bash -c "$cond" 2>&1)"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            {
                echo "# timed out after ${WAIT}s waiting for: $what"
                [ -n "$last" ] && printf '%s\n' "$last"
                echo "# node ls and stack ps on the manager:"
                timeout 30 bash -c 'manager node ls; manager stack ps "$STACK"' 2>&1 || true
            } >&2
            return 1
        fi
        sleep 0.5
    done
}

# Conditions polled by wait_until; they ask the manager, whatever the shell points at.
manager() { (eval "$(shoal machine env "$VM1")" && shoal "$@"); }
# node_status NODE: its STATUS in `node ls` (Ready, Down, ...).
node_status() { manager node ls --format '{{.Hostname}} {{.Status}}' | awk -v n="$1" '$1 == n { print $2 }'; }
# running_on NODE: how many tasks of the stack's service run on NODE.
running_on() {
    manager service ps -f desired-state=running --format '{{.Node}} {{.CurrentState}}' "$SERVICE" |
        awk -v n="$1" '$1 == n && $2 == "Running" { c++ } END { print c + 0 }'
}
export -f manager node_status running_on

for m in "$VM1" "$VM2"; do
    if shoal machine status "$m" >/dev/null 2>&1; then
        echo "getstarted: machine $m already exists; remove it or set GETSTARTED_VM1/GETSTARTED_VM2" >&2
        exit 2
    fi
done
export VM1 VM2 STACK SERVICE

note "Create two machines (network namespaces, each with its own address, hostname and daemon)"
CREATED+=("$VM1")
step "shoal machine create --driver netns$CREATE_FLAGS $VM1"
CREATED+=("$VM2")
step "shoal machine create --driver netns$CREATE_FLAGS $VM2"

note "List the machines and get their IP addresses"
step "shoal machine ls"
step "shoal machine ip $VM1"
IP1="$OUT"
step "shoal machine ip $VM2"
IP2="$OUT"

note "Make $VM1 a swarm manager"
step "shoal machine ssh $VM1 \"shoal swarm init --advertise-addr $IP1\""
JOIN="$(grep -o 'swarm join --token [^ ]* [^ ]*:2377' <<<"$OUT" | head -n 1)"
if [ -z "$JOIN" ]; then
    echo "getstarted: no join command in the output of swarm init" >&2
    exit 1
fi

note "Have $VM2 join the swarm as a worker, with the command swarm init printed"
step "shoal machine ssh $VM2 \"shoal $JOIN\""

wait_until "$VM2 Ready" '[ "$(node_status "$VM2")" = Ready ]'
step "shoal machine ssh $VM1 \"shoal node ls\""

note "Point this shell at the manager"
step "shoal machine env $VM1"
printf '\n%s$ %s%s\n' "$BOLD" "eval \$(shoal machine env $VM1)" "$PLAIN"
eval "$(shoal machine env "$VM1")"
step "shoal machine ls"

note "Deploy the app on the swarm manager: copy docker-compose.yml to $VM1 and deploy it there"
step "shoal machine scp docker-compose.yml $VM1:~"
step "shoal machine ssh $VM1 \"shoal stack deploy -c docker-compose.yml $STACK\""
wait_until "5 tasks running, on both machines" \
    'a=$(running_on "$VM1") b=$(running_on "$VM2"); [ $((a + b)) = 5 ] && [ "$a" -gt 0 ] && [ "$b" -gt 0 ]'
step "shoal stack ls"
step "shoal stack services $STACK"
step "shoal stack ps $STACK"
note "The app answers on port 4000 of both machines: the routing mesh balances each request over the 5 replicas, wherever they run (the hostname is the task's)"
export IP1 IP2
wait_until "port 4000 answering on both machines" \
    'curl -sf -m 2 "http://$IP1:4000/" >/dev/null && curl -sf -m 2 "http://$IP2:4000/" >/dev/null'
step "curl -s http://$IP1:4000/"
step "for i in \$(seq 20); do curl -s http://$IP1:4000/hostname; done | sort | uniq -c"
step "for i in \$(seq 20); do curl -s http://$IP2:4000/hostname; done | sort | uniq -c"

note "Scale the app: edit the replicas in docker-compose.yml and deploy again, from this shell"
step "sed -i 's/replicas: 5/replicas: 6/' docker-compose.yml"
step "shoal stack deploy -c docker-compose.yml $STACK"
wait_until "6 tasks running" 'a=$(running_on "$VM1") b=$(running_on "$VM2"); [ $((a + b)) = 6 ]'
step "shoal stack services $STACK"
if command -v docker >/dev/null; then
    note "The docker CLI talks to the same manager: scale again with docker stack deploy"
    step "sed -i 's/replicas: 6/replicas: 7/' docker-compose.yml"
    step "docker stack deploy -c docker-compose.yml $STACK"
    wait_until "7 tasks running" 'a=$(running_on "$VM1") b=$(running_on "$VM2"); [ $((a + b)) = 7 ]'
    step "docker stack services $STACK"
    step "docker node ls"
    step "docker stack ps $STACK"
else
    note "(the docker CLI is not installed: docker stack deploy, docker node ls and docker stack ps skipped; scale again with shoal)"
    step "sed -i 's/replicas: 6/replicas: 7/' docker-compose.yml"
    step "shoal stack deploy -c docker-compose.yml $STACK"
    wait_until "7 tasks running" 'a=$(running_on "$VM1") b=$(running_on "$VM2"); [ $((a + b)) = 7 ]'
    step "shoal stack services $STACK"
fi

note "Drain $VM2: its tasks are shut down and started again on $VM1"
step "shoal node update --availability drain $VM2"
wait_until "all 7 tasks on $VM1" '[ "$(running_on "$VM1")" = 7 ]'
step "shoal node ls"
step "shoal stack ps $STACK"
note "The page still answers on both addresses, from the tasks on $VM1"
step "for i in \$(seq 20); do curl -s http://$IP1:4000/hostname; done | sort | uniq -c"
step "for i in \$(seq 20); do curl -s http://$IP2:4000/hostname; done | sort | uniq -c"

note "Make $VM2 active again (running tasks stay where they are)"
step "shoal node update --availability active $VM2"
step "shoal node ls"

note "Spread the tasks again (a forced update reschedules them), then stop $VM2"
step "shoal service update --force $SERVICE"
wait_until "7 tasks running, some on $VM2" \
    'a=$(running_on "$VM1") b=$(running_on "$VM2"); [ $((a + b)) = 7 ] && [ "$b" -gt 0 ]'
step "shoal stack ps -f desired-state=running $STACK"
step "shoal machine stop $VM2"
step "shoal machine ls"
note "The manager marks $VM2 Down and starts its tasks on $VM1"
wait_until "$VM2 Down" '[ "$(node_status "$VM2")" = Down ]'
wait_until "all 7 tasks on $VM1" '[ "$(running_on "$VM1")" = 7 ]'
step "shoal node ls"
step "shoal stack ps -f desired-state=running $STACK"

note "Start $VM2 again: it comes back Ready"
step "shoal machine start $VM2"
wait_until "$VM2 Ready" '[ "$(node_status "$VM2")" = Ready ]'
step "shoal node ls"

note "Clean up: remove the stack (its service and its network), unset the environment, leave the swarm, remove the machines"
step "shoal stack rm $STACK"
wait_until "the stack's tasks gone" '! manager stack ps "$STACK" >/dev/null 2>&1'
wait_until "port 4000 closed" '! curl -s -m 2 "http://$IP1:4000/" >/dev/null'
step "curl -s -m 2 http://$IP1:4000/ || echo \"port 4000: no answer\""
step "shoal stack ls"
step "shoal network ls"
printf '\n%s$ %s%s\n' "$BOLD" "eval \$(shoal machine env -u)" "$PLAIN"
eval "$(shoal machine env -u)"
step "shoal machine ssh $VM2 \"shoal swarm leave\""
step "shoal machine ssh $VM1 \"shoal swarm leave --force\""
step "shoal machine rm -y $VM1"
step "shoal machine rm -y $VM2"
CREATED=()
step "shoal machine ls"
