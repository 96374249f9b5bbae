-- doctune schema: memberships becomes a WITHOUT ROWID table keyed by (file_id, strategy, ordinal).
-- As a rowid table each membership went into three B-trees (the table, its primary-key index, and
-- memberships_chunk); clustered on its primary key it goes into two. Nothing addresses a
-- membership by rowid. A cold scan inserts tens of thousands of them (issue 12 item 9).
-- The views that read memberships are dropped and made again around the table swap (SQLite's
-- documented procedure for changing a table's definition).
DROP VIEW live_chunks;
DROP VIEW eval_holdout_chunks;
CREATE TABLE memberships_new (
    file_id    INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    strategy   TEXT NOT NULL,          -- heading | paragraph | fixed | code_fixed | code_ast
    ordinal    INTEGER NOT NULL,
    chunk_id   TEXT NOT NULL REFERENCES chunks(id),
    start_line INTEGER NOT NULL,       -- 1-based, inclusive, in the source file
    end_line   INTEGER NOT NULL,
    heading    TEXT,                   -- section path ("Intro > Install") where known
    PRIMARY KEY (file_id, strategy, ordinal)
) WITHOUT ROWID;
INSERT INTO memberships_new (file_id, strategy, ordinal, chunk_id, start_line, end_line, heading)
    SELECT file_id, strategy, ordinal, chunk_id, start_line, end_line, heading FROM memberships;
DROP TABLE memberships;
ALTER TABLE memberships_new RENAME TO memberships;
CREATE INDEX memberships_chunk ON memberships (chunk_id);
CREATE VIEW live_chunks AS
    SELECT DISTINCT m.chunk_id AS chunk_id
    FROM memberships m JOIN files f ON f.id = m.file_id
    WHERE f.status = 'live';
CREATE VIEW eval_holdout_chunks AS
    SELECT DISTINCT m.chunk_id AS chunk_id
    FROM memberships m JOIN files f ON f.id = m.file_id
    JOIN eval_holdout_files h ON h.repo = f.repo AND h.path = f.path
    WHERE f.status = 'live';
