"""The PostgreSQL schema and every statement :class:`~notifier.store.postgres.PostgresStore` runs.

Kept apart from the store class so that the SQL reads top to bottom in one place. Each state
change two processes could race on is one conditional ``UPDATE`` (docs/design.md section 1).
Ids and idempotency keys use the "C" collation: UUIDv7 text then sorts by creation time, and
a key prefix (``key#...``, a user fan-out) is a plain index range.
"""

# The f-strings below interpolate only constants (of this module, or imported), never input.
# ruff: noqa: S608

from __future__ import annotations

import re

from notifier.models import Status
from notifier.store.base import API_KEY_ID_CHARS

# Any constant will do; every process agrees on it so that setup() runs one at a time.
SETUP_LOCK_KEY = 0x6E6F7469666965  # "notifie"

OPEN = "('pending', 'scheduled', 'retrying')"
FINAL = "('sent', 'failed', 'cancelled', 'expired')"
# Held by a worker (or by a dead one until its lock expires); the index predicate and the
# recovery use this same text, so that the planner proves the one from the other.
LOCKED_OPEN = f"status IN {OPEN} AND locked_by IS NOT NULL"
# The final statuses other than sent: about a tenth of a grown table.
UNSENT_FINAL = "('failed', 'cancelled', 'expired')"
# Never published, or last published before it fell due (that wake-up missed the claim as
# not due): the document needs a publish once due. The index predicate and the take use
# this same text, so that the planner proves the one from the other.
AWAITING_PUBLISH = (
    "(published_at IS NULL OR published_at < next_attempt_at OR published_at < scheduled_for)"
)

# The bulk lane's open documents: BULK_APPS and the index that serves it use this same text.
OPEN_BULK = f"lane = 'bulk' AND status IN {OPEN}"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS notifications (
    id text COLLATE "C" PRIMARY KEY,
    app text NOT NULL,
    user_id text,
    target_platform text NOT NULL,
    target_token text NOT NULL,
    title text,
    body text,
    data jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    priority text NOT NULL,
    lane text NOT NULL DEFAULT 'transactional',
    collapse_key text,
    apns_topic text,
    ttl_seconds integer,
    status text NOT NULL,
    scheduled_for timestamptz,
    next_attempt_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error jsonb,
    locked_by text,
    locked_at timestamptz,
    lock_expiry timestamptz,
    published_at timestamptz,
    sent_at timestamptz,
    provider_message_id text,
    idempotency_key text COLLATE "C",
    request_fingerprint text,
    history jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
-- lane came with the lanes (issue 18). Its constant default makes adding it to an existing
-- table metadata-only (PostgreSQL >= 11: no rewrite, no scan; old rows read as transactional).
-- Asked for only when missing: ALTER TABLE takes an ACCESS EXCLUSIVE lock even when IF NOT
-- EXISTS then finds the column, and every api and worker runs this at start. No CHECK, as for
-- status and priority: the store writes only Lane values and reads them back through the enum.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'notifications'::regclass AND attname = 'lane'
                     AND NOT attisdropped) THEN
        ALTER TABLE notifications ADD COLUMN lane text NOT NULL DEFAULT 'transactional';
    END IF;
END $$;
-- apns_topic came with per-app credentials (issue 16): nullable, so adding it is
-- metadata-only too; asked for only when missing, as lane above.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'notifications'::regclass AND attname = 'apns_topic'
                     AND NOT attisdropped) THEN
        ALTER TABLE notifications ADD COLUMN apns_topic text;
    END IF;
END $$;
-- Autovacuum by a share of the table's rows (the defaults: vacuum at 20 % dead, analyze at 10 %
-- changed) waits ten times longer at 10M rows than at 1M: every notification leaves a dead
-- entry in the open-only indexes (its pending version), which the sweeper's take, /stats'
-- counts and the claims walk until a vacuum removes them (after one 30,000-notification run
-- on a 1M-row table the take read 42 buffers, 2 once vacuumed), and the plans rest on the
-- share of open rows that ANALYZE last saw. 2 % and 1 % keep that at about 200,000 and
-- 100,000 rows on a 10M table; a vacuum reads only the pages changed since the last one (the
-- visibility map) and ANALYZE a fixed sample. Set once: an operator's own autovacuum
-- settings on the table are left alone. No fillfactor: no update here is HOT whatever the
-- free space (each changes a column that an index holds or filters on: lock_expiry,
-- published_at or status; 0 HOT updates of 194,364 measured), so the room would stay empty.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class c, unnest(coalesce(c.reloptions, '{{}}')) o
                   WHERE c.oid = 'notifications'::regclass AND o LIKE 'autovacuum%') THEN
        ALTER TABLE notifications SET (autovacuum_vacuum_scale_factor = 0.02,
            autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01);
    END IF;
END $$;
-- the design's (status, next_attempt_at), partial: only open documents are ever looked up by
-- it, so a final one leaves it (its outcome write adds no entry) and it stays the size of the
-- backlog, not of the table. Replaces the full one of 0.1.
DROP INDEX IF EXISTS notifications_status_next_attempt;
DROP INDEX IF EXISTS notifications_status_lock_expiry;
CREATE INDEX IF NOT EXISTS notifications_open_status_next_attempt
    ON notifications (status, next_attempt_at) WHERE status IN {OPEN};
-- The expired-lock recovery's (RECOVER_EXPIRED_LOCKS): the locked open documents by expiry,
-- the size of what workers hold. It replaces the design's (status, lock_expiry) over every
-- open document. Why: with that one, in the statistics of an idle table, the planner read the
-- recovery through either open-only index alike and walked the whole backlog every sweep
-- (41,000 rows and 105 ms a sweep, a quarter of PostgreSQL's time in a 60,000-notification
-- campaign); and a document got an entry in it at its insert, its published mark and its
-- claim, where it now gets one at its claim only.
DROP INDEX IF EXISTS notifications_open_status_lock_expiry;
CREATE INDEX IF NOT EXISTS notifications_open_locked
    ON notifications (lock_expiry) WHERE {LOCKED_OPEN};
CREATE UNIQUE INDEX IF NOT EXISTS notifications_app_idempotency_key
    ON notifications (app, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS notifications_user_created
    ON notifications (user_id, created_at);
CREATE INDEX IF NOT EXISTS notifications_target_token
    ON notifications (target_token);
CREATE INDEX IF NOT EXISTS notifications_app_id
    ON notifications (app, id DESC);
-- An app's notifications of one status, newest first (GET /v1/notifications?status=): sent is
-- most of a grown table, so (app, id DESC) finds a page of it at once; open ones are in the
-- partial open indexes; failed, cancelled and expired ones are rare (about 6 %, 1 % and 3 %),
-- and a page of them walked (app, id DESC), or the primary key backwards, past every sent
-- row: 0.8-1.7 s at 1M rows, seconds more at 10M (issue 17). This index holds the rare final
-- rows only (an outcome write adds an entry to it for them alone). The query names the status
-- as a constant so that the planner can prove the predicate (list_notifications).
CREATE INDEX IF NOT EXISTS notifications_app_unsent_final
    ON notifications (app, status, id DESC) WHERE status IN {UNSENT_FINAL};
-- The sweeper's two takes (TAKE_DUE_FOR_PUBLISH): open documents awaiting a publish (never
-- published, or last published before they fell due), by when they fall due, and open
-- documents published, by when. Neither holds a final document; the first stays the size of
-- what awaits a publish.
DROP INDEX IF EXISTS notifications_open_published;
DROP INDEX IF EXISTS notifications_open_created;
DROP INDEX IF EXISTS notifications_open_unpublished_due;
CREATE INDEX IF NOT EXISTS notifications_open_awaiting_publish
    ON notifications ((coalesce(next_attempt_at, '-infinity')))
    WHERE status IN {OPEN} AND {AWAITING_PUBLISH};
CREATE INDEX IF NOT EXISTS notifications_open_published_at
    ON notifications (published_at) WHERE published_at IS NOT NULL AND status IN {OPEN};
-- BULK_APPS: the apps with open bulk-lane documents, one index entry per such document, so
-- it stays the size of the bulk backlog and a final document leaves it.
CREATE INDEX IF NOT EXISTS notifications_open_bulk_app
    ON notifications (app) WHERE {OPEN_BULK};

CREATE TABLE IF NOT EXISTS devices (
    app text NOT NULL,
    token text NOT NULL,
    platform text NOT NULL,
    user_id text,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deactivated_reason text,
    PRIMARY KEY (app, token)
);
CREATE INDEX IF NOT EXISTS devices_app_user ON devices (app, user_id);

CREATE TABLE IF NOT EXISTS api_keys (
    key_hash text PRIMARY KEY,
    app text NOT NULL,
    created_at timestamptz NOT NULL
);
"""


def _unless_exists(schema: str) -> str:
    """Each ``CREATE INDEX IF NOT EXISTS`` of ``schema`` asked for only when the index is
    missing. Why: CREATE INDEX takes a SHARE lock on the table before it finds the index
    there, and autovacuum gives way to any lock that conflicts with its own, so every api
    and worker start cancelled a running vacuum; on a 10M-row table one takes minutes, and
    with restarts a few minutes apart none finished (seen in the server log: cancelled at
    block 971,430 of 998,315)."""
    return re.sub(
        r"CREATE (UNIQUE )?INDEX IF NOT EXISTS (\w+)(\s+ON [^;]+);",
        lambda m: (
            f"DO $$ BEGIN IF to_regclass('{m[2]}') IS NULL THEN "
            f"CREATE {m[1] or ''}INDEX {m[2]}{m[3]}; END IF; END $$;"
        ),
        schema,
    )


SCHEMA = _unless_exists(SCHEMA)

# -- notifications: API side ------------------------------------------------------------------

INSERT_COLUMNS = (
    "id",
    "app",
    "user_id",
    "target_platform",
    "target_token",
    "title",
    "body",
    "data",
    "priority",
    "lane",
    "collapse_key",
    "ttl_seconds",
    "status",
    "scheduled_for",
    "next_attempt_at",
    "attempts",
    "last_error",
    "published_at",
    "idempotency_key",
    "request_fingerprint",
    "history",
    "created_at",
    "updated_at",
    "apns_topic",
)
# PostgreSQL array type of each column above, for ``unnest``; jsonb travels as text.
INSERT_ARRAY_TYPES = (
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int4",
    "text",
    "timestamptz",
    "timestamptz",
    "int4",
    "text",
    "timestamptz",
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "text",
)
_JSON_COLUMNS = {"data", "last_error", "history"}


def _insert_sql() -> str:
    params = ", ".join(f"${i}::{t}[]" for i, t in enumerate(INSERT_ARRAY_TYPES, start=1))
    select = ", ".join(f"u.{c}::jsonb" if c in _JSON_COLUMNS else f"u.{c}" for c in INSERT_COLUMNS)
    return (
        f"INSERT INTO notifications ({', '.join(INSERT_COLUMNS)}) "
        f"SELECT {select} FROM unnest({params}) AS u({', '.join(INSERT_COLUMNS)}) "
        "ON CONFLICT (app, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
        "RETURNING id"
    )


INSERT_MANY = _insert_sql()

SELECT_BY_KEYS = """
SELECT n.* FROM notifications n
JOIN unnest($1::text[], $2::text[]) AS k(app, key)
  ON n.app = k.app AND n.idempotency_key = k.key
"""

GET = "SELECT * FROM notifications WHERE id = $1"
GET_FOR_APP = "SELECT * FROM notifications WHERE id = $1 AND app = $2"


def list_notifications(*, status: Status | None, by_user: bool, after: bool) -> str:
    """An app's page, newest first: $1 app, $2 limit, then $3 user id and the cursor id
    (``after``) when given. The status is a constant (one of the Status values), not a
    parameter: the planner can then use that status's partial index
    (notifications_app_unsent_final, or the open ones), where a parameter's generic plan
    walked the primary key backwards past every sent row."""
    clauses = ["app = $1"]
    given = 2
    if by_user:
        given += 1
        clauses.append(f"user_id = ${given}")
    if after:
        given += 1
        clauses.append(f"id < ${given}")
    if status is not None:
        clauses.append(f"status = '{Status(status).value}'")
    return f"SELECT * FROM notifications WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT $2"


LIST_BY_KEYS = """
SELECT * FROM notifications n
WHERE n.app = $1 AND n.idempotency_key IS NOT NULL
  AND EXISTS (
    SELECT 1 FROM unnest($2::text[]) AS k(key)
    WHERE n.idempotency_key = k.key
       OR (n.idempotency_key >= k.key || '#' AND n.idempotency_key < k.key || '$'))
ORDER BY n.id
"""

# Multi-row updates lock their rows in id order first (ORDER BY id FOR UPDATE): two of them
# running at once (the API's mark_published, a worker's complete_many) then never deadlock.
# Only documents no worker has claimed yet: the API marks after its confirm, and by then a
# fast worker may have pushed the document and stored it as retrying; a mark there would pass
# the consumed wake-up off as the retry's (docs/workers.md, "Sweeper").
# "Not any other status" rather than "pending", though the two are the same: like a claim
# (_CLAIMABLE), a mark must find its rows by the primary key. With "status = 'pending'" the
# generic plan took a partial open-only index, which looks empty in the statistics of an
# idle table, and read the whole backlog on every call: during a 60,000-notification
# campaign the marks cost 0.85 ms of database time per notification, more than its
# insert, claim and outcome write together (pg_stat_statements, notifier bench --lanes).
NOT_PENDING = "(" + ", ".join(f"'{s}'" for s in Status if s is not Status.PENDING) + ")"
MARK_PUBLISHED = f"""
UPDATE notifications n SET published_at = $2
FROM (SELECT id FROM notifications WHERE id = ANY($1::text[]) AND published_at IS NULL
        AND attempts = 0 AND status NOT IN {NOT_PENDING}
      ORDER BY id FOR UPDATE) l
WHERE n.id = l.id
"""

UNMARK_PUBLISHED = """
UPDATE notifications n SET published_at = NULL
FROM (SELECT id FROM notifications WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE) l
WHERE n.id = l.id
"""

CANCEL = f"""
UPDATE notifications
SET status = 'cancelled', updated_at = $3, locked_by = NULL, locked_at = NULL,
    lock_expiry = NULL, next_attempt_at = NULL
WHERE id = $1 AND app = $2 AND status NOT IN {FINAL}  -- by primary key: see _CLAIMABLE
  AND (locked_by IS NULL OR lock_expiry < $3)
RETURNING *
"""

# -- notifications: worker side --------------------------------------------------------------

# $1 ids, $2 worker, $3 now, $4 lock expiry, $5 the new attempt as a one-element JSON array.
# The claimable rows are locked in id order first (as every multi-row update here), and the
# claimable test is repeated on the locked row. A previous attempt left unfinished by a dead
# worker is marked "unknown" on the way. Rows that were not won come back as they were, in
# the same round trip, for classifying the misses.
# "Not final" rather than "open", though the two are the same: a claim must find its rows by
# the primary key. With "status IN open" the planner may take the partial open-only indexes
# instead, which look empty in the statistics of an idle table; a claim then scanned the
# whole backlog once a burst arrived (each claim ~1 s of CPU at 100,000 queued, until the
# next autoanalyze). "NOT IN final" cannot use them.
_CLAIMABLE = f"""status NOT IN {FINAL}
      AND (scheduled_for IS NULL OR scheduled_for <= $3)
      AND (next_attempt_at IS NULL OR next_attempt_at <= $3)
      AND (locked_by IS NULL OR lock_expiry < $3)"""
CLAIM_MANY = f"""
WITH l AS (
    SELECT id FROM notifications WHERE id = ANY($1::text[]) AND {_CLAIMABLE}
    ORDER BY id FOR UPDATE
), won AS (
    UPDATE notifications n
    SET locked_by = $2, locked_at = $3, lock_expiry = $4, attempts = attempts + 1,
        updated_at = $3,
        history = (CASE
            WHEN jsonb_array_length(history) > 0 AND history -> -1 ->> 'finished_at' IS NULL
                 AND history -> -1 ->> 'outcome' IS NULL
            THEN jsonb_set(history, '{{-1,outcome}}', '"unknown"')
            ELSE history END) || $5::text::jsonb
    FROM l
    WHERE n.id = l.id AND {_CLAIMABLE}
    RETURNING n.*
)
SELECT true AS won, * FROM won
UNION ALL
SELECT false AS won, * FROM notifications
WHERE id = ANY($1::text[]) AND id NOT IN (SELECT id FROM won)
"""

# One statement for any number of outcomes, fenced on locked_by = $1.
COMPLETE_MANY = """
WITH l AS (
    SELECT id FROM notifications WHERE id = ANY($2::text[]) AND locked_by = $1
    ORDER BY id FOR UPDATE
)
UPDATE notifications n
SET status = u.status,
    locked_by = NULL, locked_at = NULL, lock_expiry = NULL,
    updated_at = u.finished_at,
    sent_at = CASE WHEN u.status = 'sent' THEN u.finished_at ELSE n.sent_at END,
    provider_message_id = COALESCE(u.provider_message_id, n.provider_message_id),
    next_attempt_at = CASE WHEN u.status = 'retrying' THEN u.next_attempt_at END,
    published_at = CASE WHEN u.status = 'retrying' THEN NULL ELSE n.published_at END,
    last_error = COALESCE(u.last_error::jsonb, n.last_error),
    history = CASE WHEN jsonb_array_length(n.history) > 0
        THEN jsonb_set(n.history, '{-1}', (n.history -> -1) || u.finish::jsonb)
        ELSE n.history END
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[],
            $7::text[], $8::text[])
     AS u(id, status, finished_at, provider_message_id, next_attempt_at, last_error, finish)
WHERE n.id = u.id AND n.locked_by = $1 AND n.id IN (SELECT id FROM l)
RETURNING n.id
"""

GET_MANY = "SELECT * FROM notifications WHERE id = ANY($1::text[])"

# -- sweeper ------------------------------------------------------------------------------------

# $1 now, $2 limit, $3 unpublished grace cut-off, $4 stale published cut-off.
# Two takes, each on its own partial index, so that a round reads what it publishes and
# not the backlog: under a burst of 100,000 queued (published) documents, one scan of all
# open documents per round and worker was a steady share of PostgreSQL's CPU.
# - awaiting a publish (due scheduled/retrying ones never published since they fell due,
#   pending ones never published past the grace): the index holds those open documents
#   only, keyed by when they fall due. A wake-up published before the document was due
#   cannot deliver it (its claim misses as not due), so it does not count;
# - published long ago and never claimed since (a lost wake-up): by published_at. The
#   sweeper sets the cut-off from how far the work queue has got (notifier/sweeper.py).
_DUE_UNLOCKED = """(scheduled_for IS NULL OR scheduled_for <= $1)
      AND (locked_by IS NULL OR lock_expiry < $1)"""
TAKE_DUE_FOR_PUBLISH = f"""
WITH unpublished AS (
    SELECT id FROM notifications
    WHERE status IN {OPEN} AND {AWAITING_PUBLISH}
      AND coalesce(next_attempt_at, '-infinity') <= $1
      AND {_DUE_UNLOCKED}
      AND (status <> 'pending' OR created_at < $3)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), stale AS (
    SELECT id FROM notifications
    WHERE published_at < $4 AND status IN {OPEN}
      AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
      AND {_DUE_UNLOCKED}
      AND (locked_at IS NULL OR locked_at < published_at)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), c AS (
    SELECT id FROM unpublished UNION SELECT id FROM stale
)
UPDATE notifications n SET published_at = $1
WHERE n.id = ANY(ARRAY(SELECT id FROM c LIMIT $2))
RETURNING n.id, n.app, n.lane
"""

# $1 now, $2 limit, $3 true when the policy fails unknown outcomes, $4 last_error JSON.
RECOVER_EXPIRED_LOCKS = f"""
WITH c AS (
    SELECT id,
           (jsonb_array_length(history) > 0 AND history -> -1 ->> 'finished_at' IS NULL
            AND history -> -1 ->> 'outcome' IS NULL) AS unknown
    FROM notifications
    WHERE {LOCKED_OPEN} AND lock_expiry < $1
    ORDER BY lock_expiry
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications n
SET locked_by = NULL, locked_at = NULL, lock_expiry = NULL, updated_at = $1,
    history = CASE WHEN c.unknown
        THEN jsonb_set(n.history, '{{-1,outcome}}', '"unknown"') ELSE n.history END,
    status = CASE WHEN c.unknown AND $3 THEN 'failed' ELSE n.status END,
    last_error = CASE WHEN c.unknown AND $3 THEN $4::text::jsonb ELSE n.last_error END,
    next_attempt_at = CASE WHEN c.unknown AND $3 THEN NULL ELSE n.next_attempt_at END,
    published_at = CASE WHEN c.unknown AND $3 THEN n.published_at ELSE $1 END
FROM c WHERE n.id = c.id
RETURNING n.id, n.app, n.lane, c.unknown, NOT (c.unknown AND $3) AS republish
"""

# $1 the id floor of $2 (ids below it were made before $2), $3 limit. In id order over the
# primary key: old rows first, and the scan stops at the floor.
DELETE_FINAL = f"""
WITH c AS (
    SELECT id FROM notifications
    WHERE id < $1 AND status IN {FINAL} AND created_at < $2 AND updated_at < $2
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
DELETE FROM notifications n USING c WHERE n.id = c.id
"""

REOPEN = """
UPDATE notifications
SET status = 'pending', next_attempt_at = NULL, locked_by = NULL, locked_at = NULL,
    lock_expiry = NULL, published_at = $2, updated_at = $2
WHERE id = $1 AND status IN ('failed', 'expired')
RETURNING id
"""

# A loose index scan (a recursive CTE) over notifications_open_bulk_app: one index probe per
# app, for the next app above the last, rather than a read of every open bulk document. The
# workers ask every few seconds, and a 100,000-notification campaign is one app.
BULK_APPS = f"""
WITH RECURSIVE apps(app) AS (
    (SELECT app FROM notifications WHERE {OPEN_BULK} ORDER BY app LIMIT 1)
    UNION ALL
    SELECT (SELECT n.app FROM notifications n WHERE {OPEN_BULK} AND n.app > apps.app
            ORDER BY n.app LIMIT 1)
    FROM apps WHERE apps.app IS NOT NULL
)
SELECT app FROM apps WHERE app IS NOT NULL
"""

COUNTS = "SELECT status, count(*) AS n FROM notifications GROUP BY status"
COUNTS_FOR_APP = "SELECT status, count(*) AS n FROM notifications WHERE app = $1 GROUP BY status"
# Served by the partial (open-only) indexes: the size of the backlog, not of the table.
COUNTS_OPEN = (
    f"SELECT status, count(*) AS n FROM notifications WHERE status IN {OPEN} GROUP BY status"
)
COUNTS_OPEN_FOR_APP = (
    f"SELECT status, count(*) AS n FROM notifications WHERE status IN {OPEN} AND app = $1 "
    "GROUP BY status"
)

# -- devices and API keys ------------------------------------------------------------------------

UPSERT_DEVICE = """
INSERT INTO devices (app, token, platform, user_id, active, created_at, updated_at)
VALUES ($1, $2, $3, $4, true, $5, $5)
ON CONFLICT (app, token) DO UPDATE
SET platform = EXCLUDED.platform, user_id = EXCLUDED.user_id, active = true,
    deactivated_reason = NULL, updated_at = EXCLUDED.updated_at
RETURNING *, (xmax = 0) AS created
"""
DELETE_DEVICE = "DELETE FROM devices WHERE app = $1 AND token = $2"
GET_DEVICE = "SELECT * FROM devices WHERE app = $1 AND token = $2"
LIST_DEVICES = """
SELECT * FROM devices WHERE app = $1 AND user_id = ANY($2::text[]) AND (active OR NOT $3)
ORDER BY created_at, token
"""
DEACTIVATE_DEVICE = """
UPDATE devices SET active = false, deactivated_reason = $3, updated_at = $4
WHERE app = $1 AND token = $2 AND ($5::timestamptz IS NULL OR updated_at <= $5)
"""

ADD_API_KEY = """
INSERT INTO api_keys (key_hash, app, created_at) VALUES ($1, $2, $3)
ON CONFLICT (key_hash) DO NOTHING
"""
APP_FOR_KEY_HASH = "SELECT app FROM api_keys WHERE key_hash = $1"
LIST_API_KEYS = f"""
SELECT left(key_hash, {API_KEY_ID_CHARS}) AS id, app, created_at FROM api_keys
WHERE ($1::text IS NULL OR app = $1) ORDER BY created_at, key_hash
"""
REVOKE_API_KEY = f"""
DELETE FROM api_keys WHERE left(key_hash, {API_KEY_ID_CHARS}) = $1 RETURNING app
"""
