-- A batch's look-up of the records it names (`existing_records`) reads this index alone (ADR
-- 0019, twenty-ninth round): by the primary key's index SQLite found each key's rowid there and
-- then the row in the table, a second descent into pages that do not stay in the writer's cache
-- (a record's row is ~350 bytes, its entry here ~110), about a third of the look-up's time and
-- most of the writer's page reads in an unchanged re-send. Named by `INDEXED BY`, since without
-- statistics SQLite prefers the unique index.
CREATE INDEX records_key_found ON records (key, checksum, edited_at);
