-- The sweep finds a source's records through this index and checks each record's key against
-- the marks (ADR 0010). Keyed by (source, key), every imported record inserted at a random place
-- in it (keys are SHA-1s), one more random B-tree per write; keyed by source alone, SQLite orders
-- its entries by rowid, so new records append. (PostgreSQL keeps (source, key): its anti-join
-- reads keys from the index without visiting the rows.)
DROP INDEX records_source;
CREATE INDEX records_source ON records (source) WHERE source IS NOT NULL;
