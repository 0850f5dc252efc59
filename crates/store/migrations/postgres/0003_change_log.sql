-- The change log behind Catalog.Watch (SPEC.md §3; docs/adr/0003). Every transaction that changes
-- `records` appends one row per changed record here, in the same transaction, with sequences
-- taken from the single-row counter `change_sequence` while holding its row lock: so sequences
-- become visible in commit order, and a reader that saw N+1 has seen everything up to N.
CREATE TABLE change_sequence (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL
);
INSERT INTO change_sequence (id, last_seq) VALUES (1, 0);

-- Entries up to through_seq have been pruned (retention); resuming below it is OUT_OF_RANGE.
-- Apart from the counter, so the pruner never waits on (or blocks) writers.
CREATE TABLE change_log_pruned (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq BIGINT NOT NULL
);
INSERT INTO change_log_pruned (id, through_seq) VALUES (1, 0);

CREATE TABLE change_log (
    seq         BIGINT PRIMARY KEY,
    entity_type TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    op          TEXT NOT NULL, -- 'upsert' | 'delete'
    recorded_at BIGINT NOT NULL
);
CREATE INDEX change_log_type_seq ON change_log (entity_type, seq);

-- Selective entity filters: `$eq` on any entity path compiles to a containment test
-- (`entity @> '{"code": "GB"}'`) that this index answers, alongside the exact typed comparison.
CREATE INDEX records_entity_containment ON records USING gin (entity jsonb_path_ops);
