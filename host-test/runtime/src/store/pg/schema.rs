//! The PostgreSQL schema, as numbered migrations applied at start.
//!
//! `schema_migrations` lists the versions applied. Every host applies what is missing, in
//! order, in one transaction, under an advisory lock: several workers starting at once wait
//! for the first, then find nothing left to do. A database with a version newer than this
//! host knows is refused (an older host must not write to a schema it does not understand).
//!
//! A migration, once released, is never edited: a change of schema is a new entry at the end.

use postgres::Client;

use crate::store::StoreError;

/// One step of the schema.
pub(super) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The advisory lock that serialises migrations: any fixed number, unique to this store
/// (the bytes of "conn-rt1").
const MIGRATION_LOCK: i64 = 0x636f_6e6e_2d72_7431;

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "records store for contract 0.2",
        sql: r#"
CREATE TABLE tenants (
    name              TEXT PRIMARY KEY,
    created_at        BIGINT NOT NULL,
    needs_reauth      BOOLEAN NOT NULL DEFAULT FALSE,
    last_sync_at      BIGINT,
    last_sync_outcome TEXT CHECK (last_sync_outcome IN ('ok', 'interrupted', 'failed')),
    last_sync_note    TEXT,
    api_url           TEXT
);

-- The secret columns hold sealed values only (crate::secrets: `v1:<key id>:<base64>`); the
-- checks make the database itself refuse a plaintext token written by mistake.
CREATE TABLE credentials (
    tenant        TEXT PRIMARY KEY,
    access_token  TEXT NOT NULL CHECK (access_token LIKE 'v1:%'),
    refresh_token TEXT CHECK (refresh_token LIKE 'v1:%'),
    expires_at    BIGINT,
    client_id     TEXT,
    client_secret TEXT CHECK (client_secret LIKE 'v1:%'),
    account_id    TEXT,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE settings (
    tenant TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE users (
    tenant       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    email        TEXT NOT NULL,
    display_name TEXT NOT NULL,
    is_owner     BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (tenant, external_id)
);

CREATE TABLE record_groups (
    tenant      TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    PRIMARY KEY (tenant, external_id)
);

CREATE TABLE permissions (
    tenant                TEXT NOT NULL,
    group_external_id     TEXT NOT NULL,
    principal_external_id TEXT NOT NULL,
    role                  TEXT NOT NULL,
    PRIMARY KEY (tenant, group_external_id, principal_external_id)
);

-- Ids and paths are compared byte for byte (the contract's order), whatever the database's
-- default collation: COLLATE "C" on both columns, so their indexes serve the range scans.
-- `size` holds the bits of the u64 (BIGINT is signed), as the SQLite backend does.
CREATE TABLE records (
    tenant             TEXT NOT NULL,
    external_id        TEXT COLLATE "C" NOT NULL,
    revision           TEXT,
    name               TEXT NOT NULL,
    path_display       TEXT,
    path_lower         TEXT COLLATE "C",
    parent_external_id TEXT,
    kind               TEXT NOT NULL CHECK (kind IN ('file', 'folder', 'item')),
    mime_type          TEXT NOT NULL,
    size               BIGINT NOT NULL,
    content_hash       TEXT,
    client_modified    TEXT,
    server_modified    TEXT,
    is_downloadable    BOOLEAN NOT NULL,
    export_format      TEXT,
    web_url            TEXT,
    is_shared          BOOLEAN NOT NULL,
    shared_url         TEXT,
    pending_removal    BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (tenant, external_id),
    CHECK ((path_display IS NULL) = (path_lower IS NULL))
);
CREATE INDEX records_by_path ON records (tenant, path_lower);
-- At most one live record per path; records without a path and records pending removal are
-- outside it. `apply` checks first and names the holder; this index is the guarantee, also
-- between workers.
CREATE UNIQUE INDEX records_live_path ON records (tenant, path_lower)
    WHERE NOT pending_removal AND path_lower IS NOT NULL;
CREATE INDEX records_pending ON records (tenant) WHERE pending_removal;
CREATE INDEX records_shared ON records (tenant) WHERE is_shared AND NOT pending_removal;

CREATE TABLE sync_points (
    tenant     TEXT PRIMARY KEY,
    position   TEXT NOT NULL,
    phase      TEXT NOT NULL CHECK (phase IN ('listing', 'current')),
    detail     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Batches are numbered from their own sequence: unique and increasing.
CREATE SEQUENCE event_batches;

-- `seq` is global; a tenant's events are in commit order by it because `apply` holds the
-- tenant's row lock from before it takes its first number until it commits.
CREATE TABLE events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      TEXT NOT NULL,
    batch       BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    external_id TEXT NOT NULL,
    path_lower  TEXT,
    record      JSONB NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX events_by_tenant ON events (tenant, seq);
"#,
    },
    Migration {
        version: 2,
        name: "leases, schedules and the outbox (several workers)",
        sql: r#"
-- The database's clock, in milliseconds since the epoch. Every lease and due time is written
-- and compared by it, never by a worker's own clock: workers whose clocks disagree still agree
-- on who holds a tenant. clock_timestamp(), not now(): the time of the statement, not of the
-- transaction's start (a lease check after waiting for a lock sees the time after the wait).
CREATE FUNCTION conn_rt_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- The lease lives on the tenant's row, the row `apply` locks: a take-over and a fenced write
-- of the tenant are serialised by that one lock. `lease_epoch` is the fencing token: every
-- acquisition increments it, it never goes back (a release keeps it).
-- `event_seq` is the number of the tenant's last event (see `events.tenant_seq`).
ALTER TABLE tenants
    ADD COLUMN lease_epoch      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN lease_worker     TEXT,
    ADD COLUMN lease_expires_at BIGINT,
    ADD COLUMN event_seq        BIGINT NOT NULL DEFAULT 0;

-- The tenant's own numbering of its events: 1, 2, 3, ... without holes, assigned under the
-- tenant's row lock and committed with the events (a rolled-back batch leaves no hole, unlike
-- `seq`). A reader that has everything up to N and reads `tenant_seq > N` never skips an
-- event: a number is only taken after every smaller one is committed.
ALTER TABLE events ADD COLUMN tenant_seq BIGINT;
UPDATE events SET tenant_seq = numbered.n
FROM (SELECT seq, row_number() OVER (PARTITION BY tenant ORDER BY seq) AS n FROM events) AS numbered
WHERE events.seq = numbered.seq;
UPDATE tenants SET event_seq = COALESCE(
    (SELECT max(tenant_seq) FROM events WHERE events.tenant = tenants.name), 0);
ALTER TABLE events ALTER COLUMN tenant_seq SET NOT NULL;
CREATE UNIQUE INDEX events_by_tenant_seq ON events (tenant, tenant_seq);

-- When each tenant is due, in the database: any worker claims due tenants (`claim_due`), and a
-- tenant added or removed here is seen by the next claim. `next_due_at` NULL: not due (manual,
-- until a sync is requested). `requested_at`: the last explicit request (a change signal, an
-- operator); a request during a sync makes the next one due at once.
CREATE TABLE schedules (
    tenant            TEXT PRIMARY KEY REFERENCES tenants (name) ON DELETE CASCADE,
    strategy          TEXT NOT NULL
                      CHECK (strategy IN ('manual', 'scheduled', 'change-notifications')),
    interval_ms       BIGINT NOT NULL CHECK (interval_ms > 0),
    next_due_at       BIGINT,
    requested_at      BIGINT,
    last_outcome      TEXT CHECK (last_outcome IN ('ok', 'interrupted', 'failed')),
    last_completed_at BIGINT
);
CREATE INDEX schedules_due ON schedules (next_due_at) WHERE next_due_at IS NOT NULL;

-- Every lease ever granted, for audits and benchmarks: a lease ends released (or completed)
-- at `released_at`, or expired at its last `expires_at`. `commits` and `last_commit_at` count
-- the fenced transactions it committed (the time is the database's just before the commit,
-- under the tenant's lock, so the next lease's `acquired_at` is always later).
CREATE TABLE lease_history (
    tenant         TEXT NOT NULL,
    epoch          BIGINT NOT NULL,
    worker         TEXT NOT NULL,
    acquired_at    BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    released_at    BIGINT,
    ended          TEXT CHECK (ended IN ('released', 'completed', 'expired')),
    commits        BIGINT NOT NULL DEFAULT 0,
    last_commit_at BIGINT,
    PRIMARY KEY (tenant, epoch)
);

-- The outbox's readers: one durable position per (consumer, tenant), the `tenant_seq` of the
-- last event the consumer acknowledged. Per tenant because order is per tenant; a consumer
-- of many tenants keeps one row for each.
CREATE TABLE consumers (
    consumer   TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    position   BIGINT NOT NULL CHECK (position >= 0),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, tenant)
);
"#,
    },
    Migration {
        version: 3,
        name: "poll leases (long-polls held by one worker)",
        sql: r#"
-- Who holds a change-notifications tenant's long-poll between syncs: the worker that last
-- completed its sync takes it (`take_poll`), renews `poll_expires_at` while polling
-- (`hold_polls`), and a poll whose holder stopped renewing (a killed worker) is taken over by
-- another worker after the expiry. One row per tenant: at most one holder at a time.
-- `poll_history` keeps every holding (a take-over starts a new row), for audits and tests.
ALTER TABLE schedules
    ADD COLUMN poll_worker     TEXT,
    ADD COLUMN poll_expires_at BIGINT;

CREATE TABLE poll_history (
    tenant      TEXT NOT NULL,
    worker      TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, acquired_at, worker)
);
"#,
    },
    Migration {
        version: 4,
        name: "workers: fencing by epoch, cluster-wide back-off, unscheduling, history retention",
        sql: r#"
-- Fencing by epoch: a fenced commit whose lease is still the tenant's (same epoch, not
-- released) commits even after the lease's clock time ran out, and extends the lease by the
-- ttl it was granted with (kept here: `lease::seal_fenced` needs it under the row lock).
ALTER TABLE tenants ADD COLUMN lease_ttl_ms BIGINT;

-- A tenant's back-off, shared by every worker and by the long-polls (see `lease.rs`):
-- `failures` counts consecutive failed syncs; `backoff_until` is when the last failure's
-- exponential back-off ends (never before a rate limit's window); `rate_limited_until` is
-- the end of the window the server asked for (Retry-After), during which no worker sends
-- the tenant's requests at all, not even for a requested sync or a long-poll.
ALTER TABLE schedules
    ADD COLUMN failures           INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    ADD COLUMN backoff_until      BIGINT,
    ADD COLUMN rate_limited_until BIGINT;

-- A tenant re-authenticated or reconfigured starts afresh: its failure back-off is dropped
-- and, if its last sync failed, it is due at once (a rate limit's window stays: the server
-- set it, not the tenant's configuration). Done by triggers, so every writer of the
-- credentials, settings or API URL (the CLI, another host, a worker) resets it, at once.
CREATE FUNCTION conn_rt_reset_backoff(who TEXT) RETURNS void LANGUAGE sql AS $$
    UPDATE schedules SET failures = 0, backoff_until = NULL,
        next_due_at = CASE
            WHEN last_outcome = 'failed' AND strategy <> 'manual'
            THEN LEAST(COALESCE(next_due_at, conn_rt_now_ms()), conn_rt_now_ms())
            ELSE next_due_at
        END
    WHERE tenant = who AND (failures > 0 OR backoff_until IS NOT NULL)
$$;

-- A re-authentication: credentials stored for the first time (or again after a disconnect),
-- or a bare access token stored (`connect`: the host never refreshes a token without a
-- refresh token, so such a write is always the user's). The host refreshing an access token
-- (a refresh token present) is not one: otherwise a server that keeps refusing fresh tokens
-- would reset the back-off on every attempt. The values are sealed with a random nonce, so
-- they cannot be compared; an OAuth re-authentication of a tenant that needed it clears
-- `needs_reauth`, which the tenants trigger below sees.
CREATE FUNCTION conn_rt_credentials_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.refresh_token IS NULL THEN
        PERFORM conn_rt_reset_backoff(NEW.tenant);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER credentials_reset_backoff AFTER INSERT OR UPDATE ON credentials
    FOR EACH ROW EXECUTE FUNCTION conn_rt_credentials_changed();

-- A disconnected tenant (its credentials deleted) is unscheduled at once: no worker claims
-- it or polls it again. A removed tenant loses its schedule by the foreign key.
CREATE FUNCTION conn_rt_credentials_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM schedules WHERE tenant = OLD.tenant;
    RETURN NULL;
END $$;
CREATE TRIGGER credentials_unschedule AFTER DELETE ON credentials
    FOR EACH ROW EXECUTE FUNCTION conn_rt_credentials_deleted();

CREATE FUNCTION conn_rt_settings_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM conn_rt_reset_backoff(OLD.tenant);
    ELSIF TG_OP = 'INSERT' OR NEW.value IS DISTINCT FROM OLD.value THEN
        PERFORM conn_rt_reset_backoff(NEW.tenant);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER settings_reset_backoff AFTER INSERT OR UPDATE OR DELETE ON settings
    FOR EACH ROW EXECUTE FUNCTION conn_rt_settings_changed();

-- Re-authenticated (the flag cleared) or pointed at another API: a fresh start too.
CREATE FUNCTION conn_rt_tenant_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.needs_reauth AND NOT NEW.needs_reauth)
       OR NEW.api_url IS DISTINCT FROM OLD.api_url THEN
        PERFORM conn_rt_reset_backoff(NEW.name);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tenants_reset_backoff AFTER UPDATE OF needs_reauth, api_url ON tenants
    FOR EACH ROW EXECUTE FUNCTION conn_rt_tenant_changed();

-- The histories' retention (`PgStore::prune_history`) deletes by age.
CREATE INDEX lease_history_by_end ON lease_history (expires_at);
CREATE INDEX poll_history_by_end ON poll_history (expires_at);
"#,
    },
];

/// The newest schema version this host knows.
pub(super) fn current_version() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// Apply the migrations the database lacks. Returns the versions applied now. `origin` names
/// the database (without its password) in errors.
pub(super) fn migrate(client: &mut Client, origin: &str) -> Result<Vec<i64>, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let applied: Vec<i64> = tx
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let wanted = current_version();
    if let Some(&found) = applied.last()
        && found > wanted
    {
        return Err(StoreError::Open {
            path: origin.to_string(),
            message: format!(
                "the database has schema version {found}, newer than this host's {wanted}: \
                 run a host at least as new as the one that migrated it"
            ),
        });
    }
    let mut done = Vec::new();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        tx.batch_execute(migration.sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )?;
        done.push(migration.version);
    }
    tx.commit()?;
    Ok(done)
}
