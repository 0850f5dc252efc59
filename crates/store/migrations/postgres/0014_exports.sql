-- Exports (SPEC.md §7) and their runs. See docs/adr/0014-exports.md.

CREATE TABLE exports (
    id               TEXT COLLATE "C" PRIMARY KEY,
    name             TEXT COLLATE "C" NOT NULL UNIQUE,
    entity_type      TEXT COLLATE "C" NOT NULL REFERENCES entity_types(slug) ON DELETE CASCADE,
    filter           TEXT NOT NULL,
    format           TEXT NOT NULL,
    destination      TEXT NOT NULL,
    schedule         TEXT NOT NULL,
    enabled          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    -- NULL: runs only on RunExport.
    next_run_at      BIGINT NULL,
    lease_holder     TEXT NULL,
    lease_expires_at BIGINT NULL
);
CREATE INDEX exports_due ON exports (next_run_at) WHERE enabled = 1 AND next_run_at IS NOT NULL;

CREATE TABLE export_runs (
    id         TEXT COLLATE "C" PRIMARY KEY,
    export_id  TEXT COLLATE "C" NOT NULL REFERENCES exports(id) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT NOT NULL,
    records    BIGINT NOT NULL,
    bytes      BIGINT NOT NULL,
    location   TEXT NOT NULL,
    error      TEXT NULL
);
CREATE INDEX export_runs_newest ON export_runs (export_id, started_at, id);
