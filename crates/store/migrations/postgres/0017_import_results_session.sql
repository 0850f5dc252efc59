-- A close sent again after its session ended answers from the session's import result
-- (ADR 0019, eleventh round): found by session id. Pulled imports have none.
CREATE INDEX import_results_session ON import_results (session_id) WHERE session_id IS NOT NULL;
