-- Staged rows are appended, not keyed (ADR 0019, twenty-sixth round): the primary key
-- (session_id, key) took each batch's hashed keys at random places in its B-tree. `seq` orders
-- a session's rows (a session's batches are serialised by its row lock, so a later batch draws
-- later values); the last row of a key is its operation, and a commit first deletes the rows a
-- later one superseded. An accrue batch appends an 'unchanged' marker for each key it found
-- as sent once the session has staged something: it supersedes what came before, and the
-- commit's statements read it as no operation.
ALTER TABLE staged_records DROP CONSTRAINT staged_records_pkey;
ALTER TABLE staged_records ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE INDEX staged_records_session ON staged_records (session_id);
