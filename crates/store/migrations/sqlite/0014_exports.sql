-- Exports (SPEC.md §7) and their runs. See docs/adr/0014-exports.md.

CREATE TABLE exports (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    entity_type      TEXT NOT NULL REFERENCES entity_types(slug) ON DELETE CASCADE,
    filter           TEXT NOT NULL,
    format           TEXT NOT NULL,
    destination      TEXT NOT NULL,
    schedule         TEXT NOT NULL,
    enabled          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    -- NULL: runs only on RunExport.
    next_run_at      INTEGER NULL,
    lease_holder     TEXT NULL,
    lease_expires_at INTEGER NULL
);
CREATE INDEX exports_due ON exports (next_run_at) WHERE enabled = 1 AND next_run_at IS NOT NULL;

CREATE TABLE export_runs (
    id         TEXT PRIMARY KEY,
    export_id  TEXT NOT NULL REFERENCES exports(id) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER NOT NULL,
    records    INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    location   TEXT NOT NULL,
    error      TEXT NULL
);
CREATE INDEX export_runs_newest ON export_runs (export_id, started_at, id);
