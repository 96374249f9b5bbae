-- doctune schema: the BM25 index over chunk text is built when retrieval asks for it, not per insert.
-- The per-row triggers cost a cold scan more CPU than parsing did (issue 12 item 9); chunks rows are
-- content-addressed and never updated or deleted by doctune, so bringing chunks_fts up to date is
-- "index the rows added since the last build" (state/chunk_search.py; a rebuild if rows went away).
DROP TRIGGER chunks_fts_insert;
DROP TRIGGER chunks_fts_delete;
DROP TRIGGER chunks_fts_update;

-- What chunks_fts holds: every chunk with rowid <= upto_rowid, n_chunks of them, the last one
-- being last_id. One row. The triggers kept the index complete until now: the stamp says so.
CREATE TABLE chunks_fts_stamp (
    one        INTEGER PRIMARY KEY CHECK (one = 1),
    upto_rowid INTEGER NOT NULL,
    n_chunks   INTEGER NOT NULL,
    last_id    TEXT
);
INSERT INTO chunks_fts_stamp (one, upto_rowid, n_chunks, last_id)
    SELECT 1, coalesce(max(rowid), 0), count(*),
           (SELECT id FROM chunks ORDER BY rowid DESC LIMIT 1)
    FROM chunks;
