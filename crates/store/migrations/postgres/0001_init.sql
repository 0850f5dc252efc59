-- Tributary schema, PostgreSQL flavour. Timestamps are microseconds since the Unix epoch.
-- JSON columns are JSONB (read back with ::text); staged_records is a logged table on purpose:

CREATE TABLE entity_types (
    slug           TEXT COLLATE "C" PRIMARY KEY,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    schema         JSONB NOT NULL,
    schema_version BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE connectors (
    id                            TEXT COLLATE "C" PRIMARY KEY,
    name                          TEXT NOT NULL,
    entity_type                   TEXT COLLATE "C" NOT NULL REFERENCES entity_types(slug),
    write_policy                  TEXT NOT NULL,
    reject_removals_above_percent DOUBLE PRECISION NULL,
    rate_limit                    BIGINT NULL,
    token_hash                    TEXT NOT NULL UNIQUE,
    created_at                    BIGINT NOT NULL
);

CREATE TABLE consumers (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE consumer_grants (
    consumer_id TEXT COLLATE "C" NOT NULL REFERENCES consumers(id) ON DELETE CASCADE,
    entity_type TEXT COLLATE "C" NOT NULL REFERENCES entity_types(slug) ON DELETE CASCADE,
    PRIMARY KEY (consumer_id, entity_type)
);

-- No foreign key to connectors: a connector can be deleted while its records stay.
CREATE TABLE records (
    key         TEXT COLLATE "C" PRIMARY KEY,
    entity_type TEXT COLLATE "C" NOT NULL,
    connector   TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    entity      JSONB NOT NULL,
    instance    JSONB NOT NULL,
    checksum    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    source      TEXT NULL,
    edited_at   BIGINT NULL
);
CREATE INDEX records_connector ON records (connector);
CREATE INDEX records_type_key ON records (entity_type, key);
CREATE INDEX records_type_id ON records (entity_type, id);

CREATE TABLE sessions (
    id             TEXT COLLATE "C" PRIMARY KEY,
    connector      TEXT COLLATE "C" NOT NULL,
    mode           TEXT NOT NULL,
    state          TEXT NOT NULL,
    opened_at      BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL,
    closed_at      BIGINT NULL
);
-- At most one open accrue/replace session per connector (a backstop for open_session).
CREATE UNIQUE INDEX sessions_one_open_staged ON sessions (connector) WHERE state = 'open' AND mode <> 'stream';
-- The idle-expiry scan.
CREATE INDEX sessions_open_idle ON sessions (last_active_at) WHERE state = 'open';

-- Data of open accrue/replace sessions, waiting for commit. The last operation on a key wins.
CREATE TABLE staged_records (
    session_id TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    op         TEXT NOT NULL,
    name       TEXT NULL,
    entity     JSONB NULL,
    instance   JSONB NULL,
    checksum   TEXT NULL,
    PRIMARY KEY (session_id, key)
);

CREATE TABLE import_results (
    id               TEXT COLLATE "C" PRIMARY KEY,
    connector        TEXT COLLATE "C" NOT NULL,
    session_id       TEXT COLLATE "C" NULL,
    source           TEXT NULL,
    started_at       BIGINT NOT NULL,
    ended_at         BIGINT NOT NULL,
    status           TEXT NOT NULL,
    created          BIGINT NOT NULL,
    updated          BIGINT NOT NULL,
    unchanged        BIGINT NOT NULL,
    skipped          BIGINT NOT NULL,
    failed           BIGINT NOT NULL,
    deleted          BIGINT NOT NULL,
    swept            BIGINT NOT NULL,
    sweep_refused    BIGINT NOT NULL,
    pages            BIGINT NOT NULL,
    skipped_items    TEXT NOT NULL,
    failed_items     TEXT NOT NULL,
    items_not_listed BIGINT NOT NULL,
    errors           TEXT NOT NULL
);
CREATE INDEX import_results_ended ON import_results (ended_at, id);
CREATE INDEX import_results_connector_ended ON import_results (connector, ended_at, id);
