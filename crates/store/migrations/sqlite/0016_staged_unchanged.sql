-- Keys an accrue session found unchanged as it staged them (ADR 0019, eighth round): one row
-- per batch, a JSON array of keys. They are not staged_records rows: an accrue commit writes nothing for them
-- and only counts them (distinct, not staged again later, still present); one row per batch
-- instead of one per record is what makes an unchanged re-send cheap. Replace sessions still
-- stage a 'keep' row per record, which the sweep needs.
CREATE TABLE staged_unchanged (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    keys       TEXT NOT NULL
);
CREATE INDEX staged_unchanged_session ON staged_unchanged (session_id);
