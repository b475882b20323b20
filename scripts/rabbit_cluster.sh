#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on loopback, on this one machine, for the broker-failover test
# (tests/e2e/test_broker_failover.py) and for trying a cluster by hand. It never touches
# the main node (rabbit@localhost on 5672, scripts/services.sh) that everything else uses.
#
#   scripts/rabbit_cluster.sh up|down|status|urls|pid N|kill N
#
#   up      start the nodes (fresh data each time) and join them into one cluster
#   down    stop our nodes, by the PIDs they recorded (a node's PID is checked to be that
#           node's Erlang VM before it is signalled), and remove their data
#   status  one line per node
#   urls    the AMQP URLs, comma-separated: a value for NOTIFIER_AMQP_URL
#   pid N   the PID of node N's Erlang VM (beam.smp)
#   kill N  SIGKILL node N's Erlang VM: a node lost, as in a crash
#
# Nodes: ${NAME}-1@localhost .. ${NAME}-3@localhost (NAME: NOTIFIER_CLUSTER_NAME, default
# rabbit-c), AMQP ports BASE+1.. (NOTIFIER_CLUSTER_AMQP_BASE, default 5680: 5681-5683),
# Erlang distribution ports DIST_BASE+1.. (NOTIFIER_CLUSTER_DIST_BASE, default 25680), all
# bound to 127.0.0.1; data, logs and PID files under <checkout>/.run/rabbit-cluster/.
# They run as the rabbitmq user, as the main node does, so they share its Erlang cookie
# (/var/lib/rabbitmq/.erlang.cookie) and rabbitmqctl reaches them as it reaches it.
# RabbitMQ must be installed (scripts/services.sh install; epmd is shared with the main node).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=${NOTIFIER_CLUSTER_NAME:-rabbit-c}
AMQP_BASE=${NOTIFIER_CLUSTER_AMQP_BASE:-5680}
DIST_BASE=${NOTIFIER_CLUSTER_DIST_BASE:-25680}
NODES=(1 2 3)
RUN="$ROOT/.run/rabbit-cluster/$NAME"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { printf 'rabbit-cluster: %s\n' "$*" >&2; }
node() { echo "$NAME-$1@localhost"; }
node_dir() { echo "$RUN/$1"; }

# rabbitmqctl through Debian's wrapper (it switches to the rabbitmq user: the shared cookie).
ctl() { local n=$1; shift; $SUDO env ERL_EPMD_ADDRESS=127.0.0.1 rabbitmqctl -n "$(node "$n")" "$@"; }
answers() { ctl "$1" -q await_startup --timeout 1 >/dev/null 2>&1; }

# The PID node N recorded, if that process is still the Erlang VM of node N: a beam.smp
# started with node N's settings file (a recycled PID names some other program and is left
# alone; the node name is not on the VM's command line, RabbitMQ sets it after boot).
our_pid() {
    local pid
    pid=$(cat "$(node_dir "$1")/rabbit.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | head -1 | grep -q 'beam' || return 1
    tr '\0' '\n' <"/proc/$pid/environ" \
        | grep -qx "RABBITMQ_CONF_ENV_FILE=$(node_dir "$1")/rabbitmq-env.conf" || return 1
    echo "$pid"
}

# Node N accepts AMQP connections (cheap: a rabbitmqctl call costs seconds of CPU).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$((AMQP_BASE + $1))") 2>/dev/null; }

# Node N's settings, sourced by rabbitmq-server after it switched to the rabbitmq user
# (RABBITMQ_CONF_ENV_FILE; su resets the environment's limits, so the open-files limit is
# raised here, as services.sh does for the main node through /etc/rabbitmq/rabbitmq-env.conf).
write_env() {
    local n=$1 dir
    dir=$(node_dir "$n")
    mkdir -p "$dir/mnesia" "$dir/log"
    echo '[].' >"$dir/enabled_plugins"   # no management or Prometheus listeners to collide
    cat >"$dir/rabbitmq-env.conf" <<EOF
ulimit -n 20000 2>/dev/null || true
NODENAME=$(node "$n")
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=$((AMQP_BASE + n))
DIST_PORT=$((DIST_BASE + n))
MNESIA_BASE=$dir/mnesia
LOG_BASE=$dir/log
PID_FILE=$dir/rabbit.pid
ENABLED_PLUGINS_FILE=$dir/enabled_plugins
CONFIG_FILE=$dir/rabbitmq
ADVANCED_CONFIG_FILE=$dir/advanced.config
# Distribution on loopback only; schedulers that do not spin (other work shares the cores).
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none"
EOF
    # Classic peer discovery: on its first boot a node joins the listed peers that run (node
    # 1 starts first and alone, then the others join it), as docker-compose.scale.yml does.
    {
        echo "cluster_formation.peer_discovery_backend = classic_config"
        local m
        for m in "${NODES[@]}"; do echo "cluster_formation.classic_config.nodes.$m = $(node "$m")"; done
    } >"$dir/rabbitmq.conf"
    echo '[].' >"$dir/advanced.config"
    chown -R rabbitmq:rabbitmq "$RUN"
}

start_node() {
    local n=$1
    write_env "$n"
    log "starting $(node "$n") on 127.0.0.1:$((AMQP_BASE + n))"
    $SUDO env ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon >/dev/null 2>&1 || true
    $SUDO env RABBITMQ_CONF_ENV_FILE="$(node_dir "$n")/rabbitmq-env.conf" \
        ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached >/dev/null 2>&1 || true
}

await_node() {
    local n=$1
    for _ in $(seq 1 240); do
        if port_open "$n" && our_pid "$n" >/dev/null; then
            answers "$n" && return 0
        fi
        our_pid "$n" >/dev/null || [ ! -s "$(node_dir "$n")/rabbit.pid" ] || break
        sleep 0.5
    done
    log "$(node "$n") did not start; see $(node_dir "$n")/log/"
    return 1
}

up() {
    local n
    for n in "${NODES[@]}"; do
        if our_pid "$n" >/dev/null; then log "$(node "$n") already runs: run '$0 down' first"; return 1; fi
    done
    # The main node's directories must be reachable by the rabbitmq user.
    mkdir -p "$ROOT/.run"
    rm -rf "$RUN"
    start_node 1
    await_node 1
    for n in "${NODES[@]:1}"; do start_node "$n"; done
    for n in "${NODES[@]:1}"; do await_node "$n"; done
    local running
    running=$(ctl 1 -q cluster_status --formatter json | python3 -c \
        'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
    if [ "$running" != "${#NODES[@]}" ]; then log "only $running nodes joined"; return 1; fi
    log "cluster of ${#NODES[@]} up: $(urls)"
}

stop_node() {
    local n=$1 pid
    if ! pid=$(our_pid "$n"); then return 0; fi
    kill -TERM "$pid" 2>/dev/null || true   # the VM shuts down cleanly on SIGTERM
    for _ in $(seq 1 120); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
    if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    log "$(node "$n") stopped (pid $pid)"
}

down() {
    local n
    for n in "${NODES[@]}"; do stop_node "$n"; done
    rm -rf "$RUN"
}

urls() {
    local n out=()
    for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$((AMQP_BASE + n))/"); done
    (IFS=,; echo "${out[*]}")
}

status() {
    local n pid
    for n in "${NODES[@]}"; do
        if pid=$(our_pid "$n") && port_open "$n"; then
            echo "$(node "$n") up    amqp://127.0.0.1:$((AMQP_BASE + n))/ (pid $pid)"
        else
            echo "$(node "$n") down"
        fi
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    urls) urls ;;
    pid) our_pid "$2" ;;
    kill) pid=$(our_pid "$2") && kill -KILL "$pid" && log "$(node "$2") killed (pid $pid)" ;;
    *) echo "usage: $0 up|down|status|urls|pid N|kill N" >&2; exit 2 ;;
esac
