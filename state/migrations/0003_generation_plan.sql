-- doctune schema v2: the generation plan (DESIGN invariant 7, issue 12).
-- Each piece of text is asked about once; its pairs serve every chunk that contains it.

-- Chunks the LLM is (or was) asked about. Per live file, the plan asks the chunks of its first
-- strategy in the order paragraph, heading, fixed, code_ast, code_fixed; older databases'
-- asked chunks are registered here too when the planner first runs.
CREATE TABLE passages (
    chunk_id   TEXT PRIMARY KEY REFERENCES chunks(id),
    planned_at REAL NOT NULL,
    pieces     INTEGER                -- sentence hashes stored in passage_pieces; NULL = not yet
);

-- chunk_id's text contains passage_id's text: the passage's pairs serve that chunk too, and a
-- pair stays live while its passage or any chunk listed with it here is live.
CREATE TABLE chunk_passages (
    chunk_id   TEXT NOT NULL REFERENCES chunks(id),
    passage_id TEXT NOT NULL REFERENCES chunks(id),
    PRIMARY KEY (chunk_id, passage_id)
) WITHOUT ROWID;
CREATE INDEX chunk_passages_passage ON chunk_passages (passage_id);

-- 64-bit hashes of a passage's normalised sentences: two passages sharing one overlap, and the
-- questions already asked about one are shown to the model when it is asked about the other.
CREATE TABLE passage_pieces (
    piece      INTEGER NOT NULL,
    passage_id TEXT NOT NULL REFERENCES chunks(id),
    PRIMARY KEY (piece, passage_id)
) WITHOUT ROWID;
CREATE INDEX passage_pieces_passage ON passage_pieces (passage_id);
