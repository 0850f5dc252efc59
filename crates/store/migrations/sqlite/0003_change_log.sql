-- The change log behind Catalog.Watch (SPEC.md §3; docs/adr/0003). Every transaction that changes
-- `records` appends one row per changed record here, in the same transaction, with sequences
-- taken from the single-row counter `change_sequence`. Rows name the record by key; an upsert's
-- payload is read from `records` when the event is delivered.
CREATE TABLE change_sequence (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL
);
INSERT INTO change_sequence (id, last_seq) VALUES (1, 0);

-- Entries up to through_seq have been pruned (retention); resuming below it is OUT_OF_RANGE.
CREATE TABLE change_log_pruned (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq INTEGER NOT NULL
);
INSERT INTO change_log_pruned (id, through_seq) VALUES (1, 0);

CREATE TABLE change_log (
    seq         INTEGER PRIMARY KEY,
    entity_type TEXT NOT NULL,
    key         TEXT NOT NULL,
    op          TEXT NOT NULL, -- 'upsert' | 'delete'
    recorded_at INTEGER NOT NULL
);
CREATE INDEX change_log_type_seq ON change_log (entity_type, seq);
