#!/usr/bin/env bash
# Real services for tests and local runs, on loopback only: RabbitMQ, PostgreSQL and a
# MongoDB-wire-compatible stand-in (SecantusDB). Installs what is missing (Debian 12:
# apt-get; SecantusDB: pip, in a virtualenv of its own), starts what is not running, waits
# until each answers, and reuses what already runs. Also installs nginx and Prometheus,
# which the tests and `notifier stack` start themselves with the repo's configs.
#
#   scripts/services.sh up|down|status|install|vhost-add NAME|vhost-delete NAME
#                       |pg-stop|pg-start|mongodb-start|mongodb-stop
#
# Connection URLs (defaults the tests use):
#   postgresql://notifier:notifier@127.0.0.1:5432/notifier
#   amqp://guest:guest@127.0.0.1:5672/
#   mongodb://127.0.0.1:27017/   (port: NOTIFIER_TEST_MONGODB_PORT)
#
# SecantusDB is a test tool (GPL-2.0): it stays out of the project's dependencies, its
# extras and the Docker image, and is never shipped. It is not mongod: docs/testing.md says
# what was verified on it and what only a real mongod would show.
set -euo pipefail

PG_VERSION_GLOB=/usr/lib/postgresql/*/bin/postgres
PG_USER=notifier
PG_PASSWORD=notifier
PG_DB=notifier
RABBIT_ENV=(RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672
            ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_NODENAME=rabbit@localhost
            RABBITMQ_DIST_PORT=25672)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The stand-in: a pinned version (its behaviour is what docs/testing.md records), in a
# virtualenv outside the work tree so a fresh clone (CI's) reuses it; its data, log and PID
# file under the run folder, one folder per port.
SECANTUS_VERSION=0.7.0b3
MONGO_PORT=${NOTIFIER_TEST_MONGODB_PORT:-27017}
if [ "$(id -u)" -eq 0 ]; then
    SECANTUS_VENV=${NOTIFIER_SECANTUS_VENV:-/opt/notifier-secantus}
else
    SECANTUS_VENV=${NOTIFIER_SECANTUS_VENV:-${XDG_DATA_HOME:-$HOME/.local/share}/notifier-secantus}
fi
MONGO_RUN_DIR="$ROOT/.run/mongodb-$MONGO_PORT"
MONGO_PID_FILE="$MONGO_RUN_DIR/secantus.pid"

log() { printf 'services: %s\n' "$*" >&2; }

need_packages() {
    local missing=()
    command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
    compgen -G "$PG_VERSION_GLOB" >/dev/null || missing+=(postgresql)
    command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql-common)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    # The stand-in's virtualenv.
    python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    printf '%s\n' "${missing[@]}" | sort -u | grep -v '^$' || true
}

install() {
    local missing
    missing=$(need_packages)
    if [ -z "$missing" ]; then
        return 0
    fi
    log "installing: $(echo $missing)"
    # Keep Debian's service scripts from starting anything (we start services ourselves,
    # on loopback); no systemd runs on our machines.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
    $SUDO rm -f /usr/sbin/policy-rc.d
}

# -- RabbitMQ ---------------------------------------------------------------------------
rabbit_ctl() { $SUDO env "${RABBIT_ENV[@]}" rabbitmqctl -n rabbit@localhost "$@"; }
rabbit_up_now() { rabbit_ctl -q await_startup --timeout 1 >/dev/null 2>&1; }

rabbit_up() {
    if rabbit_up_now; then log "rabbitmq: already running"; return 0; fi
    log "rabbitmq: starting"
    # More open files, as its systemd unit gives it (LimitNOFILE): at the 1024 of a login,
    # RabbitMQ's file handle budget ran out under the suite's quorum queues and new
    # connections hung in rabbit_networking:setup_socket (file_handle_cache) for minutes.
    # rabbitmq-server switches to the rabbitmq user (limits reset), then sources this file.
    if ! grep -qs '^ulimit -n' /etc/rabbitmq/rabbitmq-env.conf; then
        echo 'ulimit -n 20000 2>/dev/null || true' | $SUDO tee -a /etc/rabbitmq/rabbitmq-env.conf >/dev/null
    fi
    $SUDO env "${RABBIT_ENV[@]}" ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon || true
    $SUDO env "${RABBIT_ENV[@]}" rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do
        if rabbit_up_now; then log "rabbitmq: ready on 127.0.0.1:5672"; return 0; fi
        sleep 1
    done
    log "rabbitmq: did not start; see /var/log/rabbitmq/"; return 1
}

rabbit_down() {
    if rabbit_up_now; then rabbit_ctl stop >/dev/null 2>&1 || true; log "rabbitmq: stopped"; fi
}

# -- PostgreSQL -------------------------------------------------------------------------
pg_cluster() { pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}'; }
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

pg_up() {
    if ! pg_ready; then
        local cluster
        cluster=$(pg_cluster)
        if [ -z "$cluster" ]; then
            local version
            version=$(basename "$(dirname "$(dirname "$(compgen -G "$PG_VERSION_GLOB" | tail -1)")")")
            log "postgresql: creating cluster $version/main"
            $SUDO pg_createcluster "$version" main -p 5432 >/dev/null
            cluster="$version main"
        fi
        log "postgresql: starting cluster $cluster"
        # shellcheck disable=SC2086
        $SUDO pg_ctlcluster $cluster start -- -o "-c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300" || true
        for _ in $(seq 1 60); do pg_ready && break; sleep 1; done
        pg_ready || { log "postgresql: did not start"; return 1; }
    else
        log "postgresql: already running"
    fi
    # The role and database the tests and the local stack use; idempotent.
    runuser -u postgres -- psql -X -q -h 127.0.0.1 -c "DO \$\$BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
            CREATE ROLE $PG_USER LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
        END IF; END\$\$;" >/dev/null 2>&1 \
      || runuser -u postgres -- psql -X -q -c "DO \$\$BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
            CREATE ROLE $PG_USER LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
        END IF; END\$\$;" >/dev/null
    if ! PGPASSWORD=$PG_PASSWORD psql -X -q -h 127.0.0.1 -U $PG_USER -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
        PGPASSWORD=$PG_PASSWORD createdb -h 127.0.0.1 -U $PG_USER $PG_DB
    fi
    log "postgresql: ready on 127.0.0.1:5432 (user $PG_USER, database $PG_DB)"
}

pg_down() {
    local cluster
    cluster=$(pg_cluster)
    # shellcheck disable=SC2086
    if [ -n "$cluster" ] && pg_ready; then $SUDO pg_ctlcluster $cluster stop || true; log "postgresql: stopped"; fi
}

# -- MongoDB-compatible stand-in (SecantusDB) -------------------------------------------
# Standalone mode, chosen by measurement (docs/testing.md): in its default replica-set mode
# the store's writes carry w=majority and findAndModify calls queue behind each other; the
# store needs no replica set (no transactions, no change streams).
secantus_installed() {
    [ -x "$SECANTUS_VENV/bin/python" ] \
        && [ "$(cat "$SECANTUS_VENV/.secantusdb-version" 2>/dev/null)" = "$SECANTUS_VERSION" ]
}

secantus_install() {
    secantus_installed && return 0
    log "mongodb: installing SecantusDB $SECANTUS_VERSION into $SECANTUS_VENV"
    python3 -m venv --clear "$SECANTUS_VENV"
    "$SECANTUS_VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "secantusdb==$SECANTUS_VERSION"
    echo "$SECANTUS_VERSION" >"$SECANTUS_VENV/.secantusdb-version"
}

# A MongoDB server (ours or not) answers a ping on the port. Without the stand-in's venv
# (and its PyMongo) an open port is taken for an answer.
mongo_answers() {
    if [ -x "$SECANTUS_VENV/bin/python" ]; then
        "$SECANTUS_VENV/bin/python" - "$MONGO_PORT" >/dev/null 2>&1 <<'PY'
import sys
from pymongo import MongoClient
client = MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/", serverSelectionTimeoutMS=1000,
                     connectTimeoutMS=1000, directConnection=True)
client.admin.command("ping")
PY
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$MONGO_PORT") 2>/dev/null
    fi
}

# The PID in our PID file, if that process is still the stand-in we started on this port
# (a recycled PID names some other program and is left alone).
mongo_our_pid() {
    local pid
    pid=$(cat "$MONGO_PID_FILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-m secantus .*--port $MONGO_PORT " || return 1
    echo "$pid"
}

mongo_up() {
    if mongo_answers; then
        if mongo_our_pid >/dev/null; then log "mongodb: already running on 127.0.0.1:$MONGO_PORT"
        else log "mongodb: a server already answers on 127.0.0.1:$MONGO_PORT; reusing it"; fi
        return 0
    fi
    secantus_install
    mkdir -p "$MONGO_RUN_DIR/data"
    log "mongodb: starting SecantusDB (standalone) on 127.0.0.1:$MONGO_PORT, data in $MONGO_RUN_DIR/data"
    # A session of its own: a Ctrl-C in the terminal that ran `make test` does not reach it.
    setsid "$SECANTUS_VENV/bin/python" -m secantus --host 127.0.0.1 --port "$MONGO_PORT" \
        --storage-path "$MONGO_RUN_DIR/data" --standalone \
        </dev/null >>"$MONGO_RUN_DIR/secantus.log" 2>&1 &
    echo $! >"$MONGO_PID_FILE"
    for _ in $(seq 1 120); do
        if mongo_answers; then log "mongodb: ready on 127.0.0.1:$MONGO_PORT"; return 0; fi
        if ! mongo_our_pid >/dev/null; then break; fi
        sleep 0.5
    done
    log "mongodb: did not start; last lines of $MONGO_RUN_DIR/secantus.log:"
    tail -n 20 "$MONGO_RUN_DIR/secantus.log" >&2 || true
    return 1
}

mongo_down() {
    local pid
    if ! pid=$(mongo_our_pid); then
        rm -f "$MONGO_PID_FILE"
        if mongo_answers; then log "mongodb: 127.0.0.1:$MONGO_PORT was not started by services.sh; left running"; fi
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
    if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$MONGO_PID_FILE"
    log "mongodb: stopped (pid $pid)"
}

mongo_status() {
    local pid
    if ! mongo_answers; then echo "mongodb    down"; return 0; fi
    if pid=$(mongo_our_pid); then
        echo "mongodb    up    mongodb://127.0.0.1:$MONGO_PORT/ (SecantusDB, pid $pid, data $MONGO_RUN_DIR/data)"
    else
        echo "mongodb    up    mongodb://127.0.0.1:$MONGO_PORT/ (not started by services.sh)"
    fi
}

status() {
    if rabbit_up_now; then echo "rabbitmq   up    amqp://guest:guest@127.0.0.1:5672/"; else echo "rabbitmq   down"; fi
    if pg_ready; then echo "postgresql up    postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/$PG_DB"; else echo "postgresql down"; fi
    mongo_status
}

# A vhost of its own per test session: deleting it at the end deletes every queue the
# session declared (quorum queues are Ra clusters; thousands of leftovers weigh on a broker).
vhost_add() {
    rabbit_ctl -q add_vhost "$1" >/dev/null
    rabbit_ctl -q set_permissions -p "$1" guest '.*' '.*' '.*' >/dev/null
}
vhost_delete() { rabbit_ctl -q delete_vhost "$1" >/dev/null 2>&1 || true; }

case "${1:-up}" in
    install) install; secantus_install ;;
    vhost-add) vhost_add "$2" ;;
    vhost-delete) vhost_delete "$2" ;;
    up) install; secantus_install; rabbit_up; pg_up; mongo_up ;;
    down) rabbit_down; pg_down; mongo_down ;;
    status) status ;;
    pg-stop) pg_down ;;    # the store-restart test: stop and start PostgreSQL alone
    pg-start) pg_up ;;
    mongodb-start) install; secantus_install; mongo_up ;;    # the stand-in alone
    mongodb-stop) mongo_down ;;
    *) echo "usage: $0 up|down|status|install|vhost-add NAME|vhost-delete NAME|pg-stop|pg-start|mongodb-start|mongodb-stop" >&2; exit 2 ;;
esac
