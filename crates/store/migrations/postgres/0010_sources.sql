-- Pull sources (SPEC.md §5), their runtime state, the marks of the current cycle and the
-- skipped/failed items listed in the current cycle's report. See docs/adr/0010-pull-ingestion.md.

CREATE TABLE sources (
    id                            TEXT COLLATE "C" PRIMARY KEY,
    connector                     TEXT COLLATE "C" NOT NULL REFERENCES connectors(id) ON DELETE CASCADE,
    name                          TEXT NOT NULL,
    kind                          TEXT NOT NULL,
    config                        TEXT NOT NULL,
    mapping                       TEXT NOT NULL,
    schedule                      TEXT NOT NULL,
    burst_length_ms               BIGINT NOT NULL,
    burst_interval_ms             BIGINT NOT NULL,
    rest_length_ms                BIGINT NOT NULL,
    backoff_ms                    TEXT NOT NULL,
    reject_removals_above_percent DOUBLE PRECISION NULL,
    reject_empty                  BIGINT NOT NULL,
    enabled                       BIGINT NOT NULL,
    created_at                    BIGINT NOT NULL,
    updated_at                    BIGINT NOT NULL,
    -- Runtime state.
    state                         TEXT NOT NULL DEFAULT 'idle',
    cursor                        TEXT NULL,
    cycle_id                      TEXT NULL,
    cycle_started_at              BIGINT NULL,
    attempts                      BIGINT NOT NULL DEFAULT 0,
    last_error                    TEXT NULL,
    last_run_at                   BIGINT NULL,
    next_run_at                   BIGINT NOT NULL,
    lease_holder                  TEXT NULL,
    lease_expires_at              BIGINT NULL,
    last_import_result            TEXT NULL,
    -- The current cycle's running report.
    c_created                     BIGINT NOT NULL DEFAULT 0,
    c_updated                     BIGINT NOT NULL DEFAULT 0,
    c_unchanged                   BIGINT NOT NULL DEFAULT 0,
    c_skipped                     BIGINT NOT NULL DEFAULT 0,
    c_failed                      BIGINT NOT NULL DEFAULT 0,
    c_pages                       BIGINT NOT NULL DEFAULT 0,
    c_listed                      BIGINT NOT NULL DEFAULT 0,
    c_not_listed                  BIGINT NOT NULL DEFAULT 0,
    c_errors                      TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX sources_connector ON sources (connector, id);
CREATE INDEX sources_due ON sources (next_run_at) WHERE enabled = 1;

-- Keys seen in the source's current cycle; the sweep deletes the source's records not here.
CREATE TABLE source_marks (
    source_id TEXT COLLATE "C" NOT NULL,
    key       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (source_id, key)
);

-- Skipped and failed items of the current cycle, up to reports.max_items.
CREATE TABLE source_items (
    source_id TEXT COLLATE "C" NOT NULL,
    seq       BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    item      TEXT NOT NULL,
    PRIMARY KEY (source_id, seq)
);

-- The sweep's anti-join walks one source's records.
CREATE INDEX records_source ON records (source, key) WHERE source IS NOT NULL;
