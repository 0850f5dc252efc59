-- Pull sources (SPEC.md §5), their runtime state, the marks of the current cycle and the
-- skipped/failed items listed in the current cycle's report. See docs/adr/0010-pull-ingestion.md.

CREATE TABLE sources (
    id                            TEXT PRIMARY KEY,
    connector                     TEXT NOT NULL REFERENCES connectors(id) ON DELETE CASCADE,
    name                          TEXT NOT NULL,
    kind                          TEXT NOT NULL,
    config                        TEXT NOT NULL,
    mapping                       TEXT NOT NULL,
    schedule                      TEXT NOT NULL,
    burst_length_ms               INTEGER NOT NULL,
    burst_interval_ms             INTEGER NOT NULL,
    rest_length_ms                INTEGER NOT NULL,
    backoff_ms                    TEXT NOT NULL,
    reject_removals_above_percent REAL NULL,
    reject_empty                  INTEGER NOT NULL,
    enabled                       INTEGER NOT NULL,
    created_at                    INTEGER NOT NULL,
    updated_at                    INTEGER NOT NULL,
    -- Runtime state.
    state                         TEXT NOT NULL DEFAULT 'idle',
    cursor                        TEXT NULL,
    cycle_id                      TEXT NULL,
    cycle_started_at              INTEGER NULL,
    attempts                      INTEGER NOT NULL DEFAULT 0,
    last_error                    TEXT NULL,
    last_run_at                   INTEGER NULL,
    next_run_at                   INTEGER NOT NULL,
    lease_holder                  TEXT NULL,
    lease_expires_at              INTEGER NULL,
    last_import_result            TEXT NULL,
    -- The current cycle's running report.
    c_created                     INTEGER NOT NULL DEFAULT 0,
    c_updated                     INTEGER NOT NULL DEFAULT 0,
    c_unchanged                   INTEGER NOT NULL DEFAULT 0,
    c_skipped                     INTEGER NOT NULL DEFAULT 0,
    c_failed                      INTEGER NOT NULL DEFAULT 0,
    c_pages                       INTEGER NOT NULL DEFAULT 0,
    c_listed                      INTEGER NOT NULL DEFAULT 0,
    c_not_listed                  INTEGER NOT NULL DEFAULT 0,
    c_errors                      TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX sources_connector ON sources (connector, id);
CREATE INDEX sources_due ON sources (next_run_at) WHERE enabled = 1;

-- Keys seen in the source's current cycle; the sweep deletes the source's records not here.
CREATE TABLE source_marks (
    source_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    PRIMARY KEY (source_id, key)
);

-- Skipped and failed items of the current cycle, up to reports.max_items.
CREATE TABLE source_items (
    source_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    item      TEXT NOT NULL,
    PRIMARY KEY (source_id, seq)
);

-- The sweep's anti-join walks one source's records.
CREATE INDEX records_source ON records (source, key) WHERE source IS NOT NULL;
