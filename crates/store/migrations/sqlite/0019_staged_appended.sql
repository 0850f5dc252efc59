-- Staged rows are appended, not keyed (ADR 0019, twenty-sixth round): the primary key
-- (session_id, key) took each batch's hashed keys at random places in its B-tree, most of a
-- first load's batch time on the one writer. `seq` (the rowid) orders a session's rows; the
-- last row of a key is its operation, and a commit first deletes the rows a later one
-- superseded. An accrue batch appends an 'unchanged' marker for each key it found as sent
-- once the session has staged something: it supersedes what came before, and the commit's
-- statements read it as no operation.
CREATE TABLE staged_records_appended (
    seq        INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    key        TEXT NOT NULL,
    id         TEXT NOT NULL,
    op         TEXT NOT NULL,
    name       TEXT NULL,
    entity     TEXT NULL,
    instance   TEXT NULL,
    checksum   TEXT NULL
);
INSERT INTO staged_records_appended (session_id, key, id, op, name, entity, instance, checksum)
    SELECT session_id, key, id, op, name, entity, instance, checksum FROM staged_records;
DROP TABLE staged_records;
ALTER TABLE staged_records_appended RENAME TO staged_records;
CREATE INDEX staged_records_session ON staged_records (session_id);
