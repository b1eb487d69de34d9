//! The SQLite schema, as ordered migrations tracked by `PRAGMA user_version`.
//!
//! Timestamps are INTEGER microseconds since the Unix epoch (UTC); JSON is TEXT; ids are
//! hyphenated UUID TEXT. Append a migration to change the schema; never edit a shipped one.

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the kernel.
    r#"
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,
    event_id       TEXT    NOT NULL UNIQUE,
    event_name     TEXT    NOT NULL,
    occurred_at    INTEGER NOT NULL,
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

-- The head of the hash chain, updated in the same transaction as the events: a removed
-- tail of the log no longer matches it.
CREATE TABLE chain_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);

-- One row per transaction that appended events, naming the range of their seqs; written in
-- that transaction. A dispatcher publishes the events of each range in seq order and marks it.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY,
    first_seq    INTEGER NOT NULL,
    last_seq     INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE runs (
    id                INTEGER PRIMARY KEY,
    run_id            TEXT    NOT NULL UNIQUE,
    name              TEXT    NOT NULL,
    blueprint_id      TEXT    NOT NULL,
    blueprint_version INTEGER NOT NULL,
    status            TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    completed_at      INTEGER,
    actor             TEXT    NOT NULL,
    correlation_id    TEXT    NOT NULL,
    env_id            TEXT    NOT NULL,
    trigger_event_id  TEXT,
    inputs            TEXT    NOT NULL,
    outputs           TEXT,
    error             TEXT,
    deadline_at       INTEGER,
    priority          INTEGER NOT NULL DEFAULT 0,
    step_executions   INTEGER NOT NULL DEFAULT 0,
    revision          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_blueprint ON runs (blueprint_id, id);
CREATE INDEX runs_by_correlation ON runs (correlation_id);

CREATE TABLE steps (
    step_id          TEXT    PRIMARY KEY,
    run_id           TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    idx              INTEGER NOT NULL,
    kind             TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    inputs           TEXT,
    outputs          TEXT,
    error            TEXT,
    next_attempt_at  INTEGER,
    decided_by       TEXT,
    decision_comment TEXT,
    logs_artifact_id TEXT
);
CREATE INDEX steps_by_run ON steps (run_id, idx);

CREATE TABLE artifacts (
    id            INTEGER PRIMARY KEY,
    artifact_id   TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    content_type  TEXT    NOT NULL,
    byte_length   INTEGER NOT NULL,
    sha256        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    run_id        TEXT,
    step_id       TEXT,
    metadata      TEXT    NOT NULL
);
CREATE INDEX artifacts_by_run ON artifacts (run_id, id);

CREATE TABLE footprints (
    id          INTEGER PRIMARY KEY,
    occurred_at INTEGER NOT NULL,
    run_id      TEXT,
    step_id     TEXT,
    source_kind TEXT    NOT NULL,
    source_ref  TEXT    NOT NULL,
    metric      TEXT    NOT NULL,
    quantity    REAL    NOT NULL,
    unit        TEXT    NOT NULL,
    class       TEXT    NOT NULL,
    dims        TEXT    NOT NULL
);
CREATE INDEX footprints_by_run ON footprints (run_id);
CREATE INDEX footprints_by_metric ON footprints (metric, occurred_at);

CREATE TABLE blueprint_versions (
    blueprint_id TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    definition   TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    digest       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    origin       TEXT    NOT NULL,
    PRIMARY KEY (blueprint_id, version)
);

CREATE TABLE drafts (
    id                     INTEGER PRIMARY KEY,
    draft_id               TEXT    NOT NULL UNIQUE,
    name                   TEXT    NOT NULL,
    kind                   TEXT    NOT NULL,
    status                 TEXT    NOT NULL,
    revision               INTEGER NOT NULL,
    trigger_event_type     TEXT,
    definition             TEXT    NOT NULL,
    definition_artifact_id TEXT,
    notes                  TEXT,
    source_run_id          TEXT,
    validation             TEXT,
    promoted_version       INTEGER,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);

-- A cron slot fires at most once: the primary key refuses a second claim.
CREATE TABLE cron_fires (
    blueprint_id TEXT    NOT NULL,
    slot         INTEGER NOT NULL,
    fired_at     INTEGER NOT NULL,
    PRIMARY KEY (blueprint_id, slot)
);
"#,
    // 2: scale-out — the run queue with leases, retention checkpoints and footprint rollups.
    r#"
-- One row per unfinished run shared by workers (the embedded node drives runs from memory
-- and writes no rows here; the table exists so that every adapter offers the same port).
CREATE TABLE run_queue (
    run_id      TEXT    PRIMARY KEY,
    due_at      INTEGER,
    owner       TEXT,
    lease_until INTEGER,
    claims      INTEGER NOT NULL DEFAULT 0,
    enqueued_at INTEGER NOT NULL
);
CREATE INDEX run_queue_due ON run_queue (due_at) WHERE owner IS NULL;
CREATE INDEX run_queue_leases ON run_queue (lease_until) WHERE owner IS NOT NULL;

-- Signed checkpoints written by retention: the last removed event's seq and hash.
CREATE TABLE chain_checkpoints (
    seq        INTEGER PRIMARY KEY,
    hash       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    public_key TEXT    NOT NULL,
    signature  TEXT    NOT NULL
);

-- Daily sums of footprints older than the retention window.
CREATE TABLE footprint_rollups (
    day         INTEGER NOT NULL,
    metric      TEXT    NOT NULL,
    source_kind TEXT    NOT NULL,
    source_ref  TEXT    NOT NULL,
    unit        TEXT    NOT NULL,
    class       TEXT    NOT NULL,
    quantity    REAL    NOT NULL,
    samples     INTEGER NOT NULL,
    PRIMARY KEY (day, metric, source_kind, source_ref, unit, class)
);
"#,
    // 3: the encrypted secret store (ciphertext and wrapped data keys only).
    r#"
-- The master key's description and check value: one row.
CREATE TABLE secret_master (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    key_id     TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    params     TEXT    NOT NULL,
    check_blob BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

-- Every version of every secret, encrypted with its own data key, wrapped by the master key.
CREATE TABLE secrets (
    path        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    wrapped_key BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    PRIMARY KEY (path, version)
);
"#,
    // 4: search — runs and events by the start of their short id (the random tail of the id),
    // runs by input value and by creation time.
    r#"
CREATE INDEX runs_by_short_id ON runs (substr(run_id, 29));
CREATE INDEX events_by_short_id ON events (substr(event_id, 29));
CREATE INDEX runs_by_created ON runs (created_at, id);

-- Every top-level input value of every run that is a string, number or boolean, in the form
-- `input_value_key` gives (ASCII lower case, at most 200 characters), kept by a trigger so that
-- every writer keeps it.
CREATE TABLE run_input_values (
    value  TEXT    NOT NULL,
    run_pk INTEGER NOT NULL
);
CREATE INDEX run_input_values_by_value ON run_input_values (value, run_pk);

CREATE TRIGGER runs_index_input_values AFTER INSERT ON runs
WHEN json_valid(NEW.inputs) AND json_type(NEW.inputs) = 'object'
BEGIN
    INSERT INTO run_input_values (value, run_pk)
    SELECT lower(substr(trim(CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                                         ELSE CAST(j.value AS TEXT) END), 1, 200)), NEW.id
    FROM json_each(NEW.inputs) AS j
    WHERE j.type IN ('text', 'integer', 'real', 'true', 'false');
END;

INSERT INTO run_input_values (value, run_pk)
SELECT lower(substr(trim(CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                                     ELSE CAST(j.value AS TEXT) END), 1, 200)), r.id
FROM runs AS r, json_each(r.inputs) AS j
WHERE json_valid(r.inputs) AND json_type(r.inputs) = 'object'
  AND j.type IN ('text', 'integer', 'real', 'true', 'false');
"#,
    // 5: runs held at a gate get their own status, `waiting` (they were `running`).
    r#"
UPDATE runs SET status = 'waiting'
 WHERE status = 'running'
   AND EXISTS (SELECT 1 FROM steps WHERE steps.run_id = runs.run_id AND steps.status = 'waiting');
"#,
    // 6: a run is indexed once per distinct input value (two inputs holding the same value made
    // two rows), so a search by value walks the index newest first and stops after one page.
    r#"
DELETE FROM run_input_values
 WHERE rowid NOT IN (SELECT min(rowid) FROM run_input_values GROUP BY value, run_pk);
DROP INDEX run_input_values_by_value;
CREATE UNIQUE INDEX run_input_values_by_value ON run_input_values (value, run_pk);
DROP TRIGGER runs_index_input_values;
CREATE TRIGGER runs_index_input_values AFTER INSERT ON runs
WHEN json_valid(NEW.inputs) AND json_type(NEW.inputs) = 'object'
BEGIN
    INSERT INTO run_input_values (value, run_pk)
    SELECT DISTINCT lower(substr(trim(CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                                                  ELSE CAST(j.value AS TEXT) END), 1, 200)), NEW.id
    FROM json_each(NEW.inputs) AS j
    WHERE j.type IN ('text', 'integer', 'real', 'true', 'false');
END;
"#,
    // 7: runs per blueprint and status, kept by triggers so that counting them costs one row
    // per blueprint and status instead of a scan of the runs.
    r#"
CREATE TABLE blueprint_run_counts (
    blueprint_id    TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    runs            INTEGER NOT NULL,
    last_created_at INTEGER,
    PRIMARY KEY (blueprint_id, status)
) WITHOUT ROWID;

CREATE TRIGGER runs_count_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO blueprint_run_counts (blueprint_id, status, runs, last_created_at)
    VALUES (NEW.blueprint_id, NEW.status, 1, NEW.created_at)
    ON CONFLICT (blueprint_id, status) DO UPDATE
       SET runs = runs + 1, last_created_at = max(coalesce(last_created_at, 0), excluded.last_created_at);
END;

CREATE TRIGGER runs_count_update AFTER UPDATE OF blueprint_id, status ON runs
WHEN OLD.blueprint_id IS NOT NEW.blueprint_id OR OLD.status IS NOT NEW.status
BEGIN
    UPDATE blueprint_run_counts SET runs = runs - 1
     WHERE blueprint_id = OLD.blueprint_id AND status = OLD.status;
    INSERT INTO blueprint_run_counts (blueprint_id, status, runs, last_created_at)
    VALUES (NEW.blueprint_id, NEW.status, 1, NEW.created_at)
    ON CONFLICT (blueprint_id, status) DO UPDATE
       SET runs = runs + 1, last_created_at = max(coalesce(last_created_at, 0), excluded.last_created_at);
END;

CREATE TRIGGER runs_count_delete AFTER DELETE ON runs
BEGIN
    UPDATE blueprint_run_counts SET runs = runs - 1
     WHERE blueprint_id = OLD.blueprint_id AND status = OLD.status;
END;

INSERT INTO blueprint_run_counts (blueprint_id, status, runs, last_created_at)
SELECT blueprint_id, status, count(*), max(created_at) FROM runs GROUP BY blueprint_id, status;
"#,
    // 8: footprint totals per UTC day and metric, kept by triggers so that the daily rollup
    // reads one row per day and metric instead of summing every measurement.
    r#"
CREATE TABLE footprint_days (
    day      INTEGER NOT NULL,
    metric   TEXT    NOT NULL,
    unit     TEXT    NOT NULL,
    total    REAL    NOT NULL,
    samples  INTEGER NOT NULL,
    PRIMARY KEY (day, metric)
) WITHOUT ROWID;

CREATE TRIGGER footprints_days_insert AFTER INSERT ON footprints
BEGIN
    INSERT INTO footprint_days (day, metric, unit, total, samples)
    VALUES (NEW.occurred_at - ((NEW.occurred_at % 86400000000) + 86400000000) % 86400000000,
            NEW.metric, NEW.unit, NEW.quantity, 1)
    ON CONFLICT (day, metric) DO UPDATE
       SET total = total + excluded.total, samples = samples + 1, unit = min(unit, excluded.unit);
END;

CREATE TRIGGER footprints_days_delete AFTER DELETE ON footprints
BEGIN
    UPDATE footprint_days SET total = total - OLD.quantity, samples = samples - 1
     WHERE day = OLD.occurred_at - ((OLD.occurred_at % 86400000000) + 86400000000) % 86400000000
       AND metric = OLD.metric;
    DELETE FROM footprint_days
     WHERE day = OLD.occurred_at - ((OLD.occurred_at % 86400000000) + 86400000000) % 86400000000
       AND metric = OLD.metric AND samples <= 0;
END;

INSERT INTO footprint_days (day, metric, unit, total, samples)
SELECT occurred_at - ((occurred_at % 86400000000) + 86400000000) % 86400000000 AS d, metric,
       min(unit), sum(quantity), count(*)
  FROM footprints GROUP BY d, metric;
"#,
    // 9: a blueprint's trigger switch (no row: enabled).
    r#"
CREATE TABLE blueprint_triggers (
    blueprint_id TEXT    NOT NULL PRIMARY KEY,
    enabled      INTEGER NOT NULL,
    changed_at   INTEGER NOT NULL,
    changed_by   TEXT    NOT NULL
) WITHOUT ROWID;
"#,
];
