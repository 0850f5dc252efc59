-- Exactly-once streamed batches (SPEC.md §2.3): the highest batch_seq applied in the session,
-- raised in the same transaction as the batch it belongs to. 0: none yet.
ALTER TABLE sessions ADD COLUMN applied_seq INTEGER NOT NULL DEFAULT 0;
-- staged_records.op is now 'upsert', 'delete' or 'keep' (a digest found unchanged in a replace
-- session: never written, counted unchanged, spared by the sweep).
