-- doctune schema v2 (evaluation): BM25 retrieval over chunk text, and pages held out for evaluation.

-- Full-text index over chunks.text (external content: the text is stored once, in chunks).
-- bm25(chunks_fts) ranks matches; the retrieval baseline takes the top-k live chunks.
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='rowid');
INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild');
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
CREATE TRIGGER chunks_fts_update AFTER UPDATE OF text ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
END;

-- Files matching [evaluation] holdout_globs (rewritten after every reconcile): their chunks
-- get no generation jobs and their pairs never enter a training snapshot.
CREATE TABLE eval_holdout_files (
    repo TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (repo, path)
);

-- Chunks with a live membership in a held-out page (also when other pages share the text).
CREATE VIEW eval_holdout_chunks AS
    SELECT DISTINCT m.chunk_id AS chunk_id
    FROM memberships m JOIN files f ON f.id = m.file_id
    JOIN eval_holdout_files h ON h.repo = f.repo AND h.path = f.path
    WHERE f.status = 'live';
