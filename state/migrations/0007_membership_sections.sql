-- doctune schema: a membership also records the sections that start inside its chunk.
-- JSON list of heading paths (each a list of titles), in document order; NULL when none does
-- (and for code). `heading` stays the section the chunk starts in. The generator tells each
-- answer passage its own section from these (pipeline.generate.sections). Rows written before
-- this column get it when their file is re-chunked (CHUNKER_VERSION 2026-12-02.2).
ALTER TABLE memberships ADD COLUMN sections TEXT;
