#!/usr/bin/env bash
# Real services for tests and local runs, on loopback only: RabbitMQ and PostgreSQL.
# Installs what is missing (Debian 12: apt-get), starts what is not running, waits until
# each answers, and reuses what already runs. Also installs nginx and Prometheus, which
# the tests and `notifier stack` start themselves with the repo's configs.
#
#   scripts/services.sh up|down|status|install|vhost-add NAME|vhost-delete NAME|pg-stop|pg-start
#
# Connection URLs (defaults the tests use):
#   postgresql://notifier:notifier@127.0.0.1:5432/notifier
#   amqp://guest:guest@127.0.0.1:5672/
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

log() { printf 'services: %s\n' "$*" >&2; }

need_packages() {
    local missing=()
    command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
    compgen -G "$PG_VERSION_GLOB" >/dev/null || missing+=(postgresql)
    command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql-common)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
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

status() {
    if rabbit_up_now; then echo "rabbitmq   up    amqp://guest:guest@127.0.0.1:5672/"; else echo "rabbitmq   down"; fi
    if pg_ready; then echo "postgresql up    postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/$PG_DB"; else echo "postgresql down"; fi
}

# A vhost of its own per test session: deleting it at the end deletes every queue the
# session declared (quorum queues are Ra clusters; thousands of leftovers weigh on a broker).
vhost_add() {
    rabbit_ctl -q add_vhost "$1" >/dev/null
    rabbit_ctl -q set_permissions -p "$1" guest '.*' '.*' '.*' >/dev/null
}
vhost_delete() { rabbit_ctl -q delete_vhost "$1" >/dev/null 2>&1 || true; }

case "${1:-up}" in
    install) install ;;
    vhost-add) vhost_add "$2" ;;
    vhost-delete) vhost_delete "$2" ;;
    up) install; rabbit_up; pg_up ;;
    down) rabbit_down; pg_down ;;
    status) status ;;
    pg-stop) pg_down ;;    # the store-restart test: stop and start PostgreSQL alone
    pg-start) pg_up ;;
    *) echo "usage: $0 up|down|status|install|vhost-add NAME|vhost-delete NAME|pg-stop|pg-start" >&2; exit 2 ;;
esac
