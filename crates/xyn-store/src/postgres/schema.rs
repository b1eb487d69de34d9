//! The PostgreSQL schema, as ordered migrations recorded in `xyn_migrations`.
//!
//! The same tables as the SQLite adapter: timestamps are BIGINT microseconds since the Unix
//! epoch (UTC), JSON is TEXT (kept byte for byte: the chain hashes the canonical text), ids are
//! hyphenated UUID TEXT. Names that are compared by prefix use the "C" collation, so `a.b` <
//! `a/` holds whatever the database's locale. Append a migration to change the schema; never
//! edit a shipped one.

use tokio_postgres::Client;

use crate::{StoreError, StoreResult};

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the kernel and the scale-out tables.
    r#"
CREATE TABLE events (
    seq            BIGINT  PRIMARY KEY,
    event_id       TEXT    NOT NULL UNIQUE,
    event_name     TEXT    COLLATE "C" NOT NULL,
    occurred_at    BIGINT  NOT NULL,
    env_id         TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    correlation_id TEXT    NOT NULL,
    run_id         TEXT,
    step_id        TEXT,
    resource_type  TEXT,
    resource_id    TEXT,
    data           TEXT    NOT NULL,
    hash           TEXT    NOT NULL
);
CREATE INDEX events_by_name ON events (event_name, seq);
CREATE INDEX events_by_run ON events (run_id, seq) WHERE run_id IS NOT NULL;

-- The head of the hash chain. Every transaction that appends events locks this row last
-- (after its other writes), so appends from every process form one linear chain.
CREATE TABLE chain_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO chain_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    first_seq    BIGINT NOT NULL,
    last_seq     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE runs (
    id                BIGSERIAL PRIMARY KEY,
    run_id            TEXT    NOT NULL UNIQUE,
    name              TEXT    NOT NULL,
    blueprint_id      TEXT    COLLATE "C" NOT NULL,
    blueprint_version BIGINT  NOT NULL,
    status            TEXT    NOT NULL,
    created_at        BIGINT  NOT NULL,
    started_at        BIGINT,
    completed_at      BIGINT,
    actor             TEXT    NOT NULL,
    correlation_id    TEXT    NOT NULL,
    env_id            TEXT    NOT NULL,
    trigger_event_id  TEXT,
    inputs            TEXT    NOT NULL,
    outputs           TEXT,
    error             TEXT,
    deadline_at       BIGINT,
    priority          BIGINT  NOT NULL DEFAULT 0,
    step_executions   BIGINT  NOT NULL DEFAULT 0,
    revision          BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_blueprint ON runs (blueprint_id, id);
CREATE INDEX runs_by_correlation ON runs (correlation_id);

CREATE TABLE steps (
    step_id          TEXT    PRIMARY KEY,
    run_id           TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    idx              BIGINT  NOT NULL,
    kind             TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    attempt          BIGINT  NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT,
    inputs           TEXT,
    outputs          TEXT,
    error            TEXT,
    next_attempt_at  BIGINT,
    decided_by       TEXT,
    decision_comment TEXT,
    logs_artifact_id TEXT
);
CREATE INDEX steps_by_run ON steps (run_id, idx);

CREATE TABLE artifacts (
    id            BIGSERIAL PRIMARY KEY,
    artifact_id   TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    content_type  TEXT    NOT NULL,
    byte_length   BIGINT  NOT NULL,
    sha256        TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    created_by    TEXT    NOT NULL,
    run_id        TEXT,
    step_id       TEXT,
    metadata      TEXT    NOT NULL
);
CREATE INDEX artifacts_by_run ON artifacts (run_id, id);

CREATE TABLE footprints (
    id          BIGSERIAL PRIMARY KEY,
    occurred_at BIGINT  NOT NULL,
    run_id      TEXT,
    step_id     TEXT,
    source_kind TEXT    NOT NULL,
    source_ref  TEXT    NOT NULL,
    metric      TEXT    NOT NULL,
    quantity    DOUBLE PRECISION NOT NULL,
    unit        TEXT    NOT NULL,
    class       TEXT    NOT NULL,
    dims        TEXT    NOT NULL
);
CREATE INDEX footprints_by_run ON footprints (run_id);
CREATE INDEX footprints_by_metric ON footprints (metric, occurred_at);

CREATE TABLE blueprint_versions (
    blueprint_id TEXT    COLLATE "C" NOT NULL,
    version      BIGINT  NOT NULL,
    name         TEXT    NOT NULL,
    definition   TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    digest       TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    created_by   TEXT    NOT NULL,
    origin       TEXT    NOT NULL,
    PRIMARY KEY (blueprint_id, version)
);

CREATE TABLE drafts (
    id                     BIGSERIAL PRIMARY KEY,
    draft_id               TEXT    NOT NULL UNIQUE,
    name                   TEXT    NOT NULL,
    kind                   TEXT    NOT NULL,
    status                 TEXT    NOT NULL,
    revision               BIGINT  NOT NULL,
    trigger_event_type     TEXT,
    definition             TEXT    NOT NULL,
    definition_artifact_id TEXT,
    notes                  TEXT,
    source_run_id          TEXT,
    validation             TEXT,
    promoted_version       BIGINT,
    created_at             BIGINT  NOT NULL,
    updated_at             BIGINT  NOT NULL
);

-- A cron slot fires at most once cluster-wide: the primary key refuses a second claim.
CREATE TABLE cron_fires (
    blueprint_id TEXT    NOT NULL,
    slot         BIGINT  NOT NULL,
    fired_at     BIGINT  NOT NULL,
    PRIMARY KEY (blueprint_id, slot)
);

-- The run queue: one row per unfinished run. Due rows (owner NULL, due_at <= now) are
-- claimed with FOR UPDATE SKIP LOCKED through the partial index on due_at, which holds only
-- unowned rows, so a claim reads the head of the queue whatever is queued behind it.
CREATE TABLE run_queue (
    run_id      TEXT    PRIMARY KEY,
    due_at      BIGINT,
    owner       TEXT,
    lease_until BIGINT,
    claims      BIGINT  NOT NULL DEFAULT 0,
    enqueued_at BIGINT  NOT NULL
);
CREATE INDEX run_queue_due ON run_queue (due_at) WHERE owner IS NULL;
-- Held rows only (few, whatever is queued): lease expiry, and a worker's own rows for its
-- heartbeat. No index on owner: a claim maintains as few index entries as it can.
CREATE INDEX run_queue_leases ON run_queue (lease_until) WHERE owner IS NOT NULL;

CREATE TABLE chain_checkpoints (
    seq        BIGINT  PRIMARY KEY,
    hash       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    public_key TEXT    NOT NULL,
    signature  TEXT    NOT NULL
);

CREATE TABLE footprint_rollups (
    day         BIGINT  NOT NULL,
    metric      TEXT    NOT NULL,
    source_kind TEXT    NOT NULL,
    source_ref  TEXT    NOT NULL,
    unit        TEXT    NOT NULL,
    class       TEXT    NOT NULL,
    quantity    DOUBLE PRECISION NOT NULL,
    samples     BIGINT  NOT NULL,
    PRIMARY KEY (day, metric, source_kind, source_ref, unit, class)
);

-- The store's clock, in microseconds: leases are judged by the database's clock, which every
-- process shares.
CREATE FUNCTION xyn_now_us() RETURNS BIGINT LANGUAGE sql VOLATILE AS
    $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT $$;
"#,
    // 2: the encrypted secret store (ciphertext and wrapped data keys only).
    r#"
CREATE TABLE secret_master (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    key_id     TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    params     TEXT    NOT NULL,
    check_blob BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL
);

CREATE TABLE secrets (
    path        TEXT    COLLATE "C" NOT NULL,
    version     BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL,
    created_by  TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    wrapped_key BYTEA   NOT NULL,
    nonce       BYTEA   NOT NULL,
    ciphertext  BYTEA   NOT NULL,
    PRIMARY KEY (path, version)
);
"#,
    // 3: search — runs and events by the start of their short id (the random tail of the id),
    // runs by input value and by creation time.
    r#"
CREATE INDEX runs_by_short_id ON runs ((substr(run_id, 29)) COLLATE "C");
CREATE INDEX events_by_short_id ON events ((substr(event_id, 29)) COLLATE "C");
CREATE INDEX runs_by_created ON runs (created_at, id);

-- Every top-level input value of every run that is a string, number or boolean, in the form
-- `input_value_key` gives (ASCII lower case, at most 200 characters), kept by a trigger so that
-- every writer keeps it. Inputs holding an escaped NUL (which `json` cannot turn into text)
-- are not indexed.
CREATE TABLE run_input_values (
    value  TEXT   COLLATE "C" NOT NULL,
    run_pk BIGINT NOT NULL
);
CREATE INDEX run_input_values_by_value ON run_input_values (value, run_pk);

CREATE FUNCTION xyn_index_run_input_values() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF strpos(NEW.inputs, '\u0000') = 0 AND json_typeof(NEW.inputs::json) = 'object' THEN
        INSERT INTO run_input_values (value, run_pk)
        SELECT lower(left(trim(' ' from j.value), 200) COLLATE "C"), NEW.id
        FROM json_each_text(NEW.inputs::json) AS j
        WHERE json_typeof(NEW.inputs::json -> j.key) IN ('string', 'number', 'boolean');
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER runs_index_input_values AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION xyn_index_run_input_values();

INSERT INTO run_input_values (value, run_pk)
SELECT lower(left(trim(' ' from j.value), 200) COLLATE "C"), r.id
FROM runs AS r, json_each_text(r.inputs::json) AS j
WHERE strpos(r.inputs, '\u0000') = 0 AND json_typeof(r.inputs::json) = 'object'
  AND json_typeof(r.inputs::json -> j.key) IN ('string', 'number', 'boolean');
"#,
    // 4: runs held at a gate get their own status, `waiting` (they were `running`).
    r#"
UPDATE runs SET status = 'waiting'
 WHERE status = 'running'
   AND EXISTS (SELECT 1 FROM steps WHERE steps.run_id = runs.run_id AND steps.status = 'waiting');
"#,
    // 5: a run is indexed once per distinct input value (two inputs holding the same value made
    // two rows), so a search by value walks the index newest first and stops after one page.
    r#"
DELETE FROM run_input_values AS a
 USING run_input_values AS b
 WHERE a.value = b.value AND a.run_pk = b.run_pk AND a.ctid > b.ctid;
DROP INDEX run_input_values_by_value;
CREATE UNIQUE INDEX run_input_values_by_value ON run_input_values (value, run_pk);
CREATE OR REPLACE FUNCTION xyn_index_run_input_values() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF strpos(NEW.inputs, '\u0000') = 0 AND json_typeof(NEW.inputs::json) = 'object' THEN
        INSERT INTO run_input_values (value, run_pk)
        SELECT DISTINCT lower(left(trim(' ' from j.value), 200) COLLATE "C"), NEW.id
        FROM json_each_text(NEW.inputs::json) AS j
        WHERE json_typeof(NEW.inputs::json -> j.key) IN ('string', 'number', 'boolean');
    END IF;
    RETURN NULL;
END
$fn$;
"#,
    // 6: runs per blueprint and status, kept by a trigger so that counting them costs one row
    // per blueprint and status instead of a scan of the runs. Two commits that move runs of the
    // same blueprint wait for each other on the counter row; a deadlock between them is
    // retried by the writer like any other.
    r#"
CREATE TABLE blueprint_run_counts (
    blueprint_id    TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    runs            BIGINT NOT NULL,
    last_created_at BIGINT,
    PRIMARY KEY (blueprint_id, status)
);

CREATE FUNCTION xyn_count_runs() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.blueprint_id IS NOT DISTINCT FROM NEW.blueprint_id
           AND OLD.status IS NOT DISTINCT FROM NEW.status THEN
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        UPDATE blueprint_run_counts SET runs = runs - 1
         WHERE blueprint_id = OLD.blueprint_id AND status = OLD.status;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO blueprint_run_counts AS c (blueprint_id, status, runs, last_created_at)
        VALUES (NEW.blueprint_id, NEW.status, 1, NEW.created_at)
        ON CONFLICT (blueprint_id, status) DO UPDATE
           SET runs = c.runs + 1,
               last_created_at = GREATEST(c.last_created_at, EXCLUDED.last_created_at);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER runs_count AFTER INSERT OR UPDATE OF blueprint_id, status OR DELETE ON runs
    FOR EACH ROW EXECUTE FUNCTION xyn_count_runs();

INSERT INTO blueprint_run_counts (blueprint_id, status, runs, last_created_at)
SELECT blueprint_id, status, count(*), max(created_at) FROM runs GROUP BY blueprint_id, status;
"#,
    // 7: footprint totals per UTC day and metric, kept by statement triggers (one upsert per
    // day and metric a statement touches) so that the daily rollup reads one row per day and
    // metric instead of summing every measurement.
    r#"
CREATE TABLE footprint_days (
    day      BIGINT           NOT NULL,
    metric   TEXT             NOT NULL,
    unit     TEXT             NOT NULL,
    total    DOUBLE PRECISION NOT NULL,
    samples  BIGINT           NOT NULL,
    PRIMARY KEY (day, metric)
);

CREATE FUNCTION xyn_footprint_days_insert() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO footprint_days AS d (day, metric, unit, total, samples)
    SELECT n.occurred_at - ((n.occurred_at % 86400000000) + 86400000000) % 86400000000 AS day,
           n.metric, min(n.unit), sum(n.quantity), count(*)
      FROM new_rows AS n GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, metric) DO UPDATE
       SET total = d.total + EXCLUDED.total, samples = d.samples + EXCLUDED.samples,
           unit = LEAST(d.unit, EXCLUDED.unit);
    RETURN NULL;
END
$fn$;
CREATE TRIGGER footprints_days_insert AFTER INSERT ON footprints
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION xyn_footprint_days_insert();

CREATE FUNCTION xyn_footprint_days_delete() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE footprint_days AS d SET total = d.total - o.total, samples = d.samples - o.samples
      FROM (SELECT occurred_at - ((occurred_at % 86400000000) + 86400000000) % 86400000000 AS day,
                   metric, sum(quantity) AS total, count(*) AS samples
              FROM old_rows GROUP BY 1, 2) AS o
     WHERE d.day = o.day AND d.metric = o.metric;
    DELETE FROM footprint_days WHERE samples <= 0;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER footprints_days_delete AFTER DELETE ON footprints
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION xyn_footprint_days_delete();

INSERT INTO footprint_days (day, metric, unit, total, samples)
SELECT occurred_at - ((occurred_at % 86400000000) + 86400000000) % 86400000000, metric,
       min(unit), sum(quantity), count(*)
  FROM footprints GROUP BY 1, 2;
"#,
    // 8: a blueprint's trigger switch (no row: enabled).
    r#"
CREATE TABLE blueprint_triggers (
    blueprint_id TEXT    NOT NULL PRIMARY KEY,
    enabled      BOOLEAN NOT NULL,
    changed_at   BIGINT  NOT NULL,
    changed_by   TEXT    NOT NULL
);
"#,
];

/// Applies the migrations this database lacks, one process at a time (under an advisory lock).
pub(super) async fn migrate(c: &Client) -> StoreResult<()> {
    let err = |e: tokio_postgres::Error| {
        StoreError::Unavailable(format!("cannot apply the database migrations: {e}"))
    };
    c.batch_execute(
        "SET client_min_messages = warning;
         SELECT pg_advisory_lock(hashtext('xyn_migrations:' || current_schema()));
         CREATE TABLE IF NOT EXISTS xyn_migrations (
             version BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(err)?;
    let res = async {
        let row = c
            .query_one("SELECT COALESCE(MAX(version), 0) FROM xyn_migrations", &[])
            .await
            .map_err(err)?;
        let current: i64 = row.try_get(0).map_err(err)?;
        let target = MIGRATIONS.len() as i64;
        if current > target {
            return Err(StoreError::Unavailable(format!(
                "the database has schema version {current}, newer than this xyn ({target}); upgrade xyn"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let v = i as i64 + 1;
            c.batch_execute(&format!(
                "BEGIN; {sql}; INSERT INTO xyn_migrations (version) VALUES ({v}); COMMIT;"
            ))
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration {v} failed: {e}")))?;
            tracing::info!(version = v, "database migration applied");
        }
        Ok(())
    }
    .await;
    let _ = c
        .batch_execute("SELECT pg_advisory_unlock(hashtext('xyn_migrations:' || current_schema()))")
        .await;
    res
}
