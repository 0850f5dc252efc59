-- Sessions that ended with staged rows or notes still to delete (ADR 0019, twenty-third round):
-- the transaction that ends a session lists it here, and a background task deletes its staged
-- rows and notes, then the listing, after that transaction has committed.
CREATE TABLE unstaging (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE
);
