-- Tributary schema, SQLite flavour. Timestamps are microseconds since the Unix epoch.
-- JSON columns hold JSON text; entity/instance are stored exactly as the domain canonicalised them.

CREATE TABLE entity_types (
    slug           TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    schema         TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

CREATE TABLE connectors (
    id                            TEXT PRIMARY KEY,
    name                          TEXT NOT NULL,
    entity_type                   TEXT NOT NULL REFERENCES entity_types(slug),
    write_policy                  TEXT NOT NULL,
    reject_removals_above_percent REAL NULL,
    rate_limit                    INTEGER NULL,
    token_hash                    TEXT NOT NULL UNIQUE,
    created_at                    INTEGER NOT NULL
);

CREATE TABLE consumers (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE consumer_grants (
    consumer_id TEXT NOT NULL REFERENCES consumers(id) ON DELETE CASCADE,
    entity_type TEXT NOT NULL REFERENCES entity_types(slug) ON DELETE CASCADE,
    PRIMARY KEY (consumer_id, entity_type)
);

-- No foreign key to connectors: a connector can be deleted while its records stay.
CREATE TABLE records (
    key         TEXT PRIMARY KEY,
    entity_type TEXT NOT NULL,
    connector   TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    entity      TEXT NOT NULL,
    instance    TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    source      TEXT NULL,
    edited_at   INTEGER NULL
);
CREATE INDEX records_connector ON records (connector);
CREATE INDEX records_type_key ON records (entity_type, key);
CREATE INDEX records_type_id ON records (entity_type, id);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    connector      TEXT NOT NULL,
    mode           TEXT NOT NULL,
    state          TEXT NOT NULL,
    opened_at      INTEGER NOT NULL,
    last_active_at INTEGER NOT NULL,
    closed_at      INTEGER NULL
);
-- At most one open accrue/replace session per connector (a backstop for open_session).
CREATE UNIQUE INDEX sessions_one_open_staged ON sessions (connector) WHERE state = 'open' AND mode <> 'stream';
-- The idle-expiry scan.
CREATE INDEX sessions_open_idle ON sessions (last_active_at) WHERE state = 'open';

-- Data of open accrue/replace sessions, waiting for commit. The last operation on a key wins.
CREATE TABLE staged_records (
    session_id TEXT NOT NULL,
    key        TEXT NOT NULL,
    id         TEXT NOT NULL,
    op         TEXT NOT NULL,
    name       TEXT NULL,
    entity     TEXT NULL,
    instance   TEXT NULL,
    checksum   TEXT NULL,
    PRIMARY KEY (session_id, key)
);

CREATE TABLE import_results (
    id               TEXT PRIMARY KEY,
    connector        TEXT NOT NULL,
    session_id       TEXT NULL,
    source           TEXT NULL,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER NOT NULL,
    status           TEXT NOT NULL,
    created          INTEGER NOT NULL,
    updated          INTEGER NOT NULL,
    unchanged        INTEGER NOT NULL,
    skipped          INTEGER NOT NULL,
    failed           INTEGER NOT NULL,
    deleted          INTEGER NOT NULL,
    swept            INTEGER NOT NULL,
    sweep_refused    INTEGER NOT NULL,
    pages            INTEGER NOT NULL,
    skipped_items    TEXT NOT NULL,
    failed_items     TEXT NOT NULL,
    items_not_listed INTEGER NOT NULL,
    errors           TEXT NOT NULL
);
CREATE INDEX import_results_ended ON import_results (ended_at, id);
CREATE INDEX import_results_connector_ended ON import_results (connector, ended_at, id);
