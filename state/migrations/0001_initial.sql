-- doctune schema v1. The schema is a user interface: README documents every table.

-- One row per watched repository.
CREATE TABLE repos (
    name            TEXT PRIMARY KEY,
    root            TEXT NOT NULL,
    ingested_commit TEXT,              -- last commit whose content was ingested (commits mode) / HEAD seen
    last_scan_at    REAL,              -- epoch seconds
    last_scan_ms    REAL
);

-- Every path doctune looked at: live (chunked), skipped (with reason) or deleted.
CREATE TABLE files (
    id            INTEGER PRIMARY KEY,
    repo          TEXT NOT NULL REFERENCES repos(name) ON DELETE CASCADE,
    path          TEXT NOT NULL,       -- POSIX path relative to the repo root
    kind          TEXT NOT NULL CHECK (kind IN ('doc', 'code')),
    language      TEXT,                -- markdown | rst | rust | python | c | cpp | text
    size          INTEGER,
    mtime_ns      INTEGER,
    content_hash  TEXT,                -- sha256 of the raw bytes
    status        TEXT NOT NULL CHECK (status IN ('live', 'skipped', 'deleted')),
    reason        TEXT,                -- why skipped (or an error while live, e.g. parse fallback)
    flags         TEXT,                -- comma list, e.g. 'invalid_utf8'
    git_commit    TEXT,                -- commit the content came from (git checkouts)
    first_seen_at REAL NOT NULL,
    updated_at    REAL NOT NULL,
    UNIQUE (repo, path)
);
CREATE INDEX files_status ON files (status);

-- Content-addressed chunk texts: id = sha256 of the normalised text.
CREATE TABLE chunks (
    id         TEXT PRIMARY KEY,
    text       TEXT NOT NULL,
    n_chars    INTEGER NOT NULL,
    created_at REAL NOT NULL
);

-- Which chunks a live file is made of, per strategy, in order, with source line spans.
CREATE TABLE memberships (
    file_id    INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    strategy   TEXT NOT NULL,          -- heading | paragraph | fixed | code_fixed | code_ast
    ordinal    INTEGER NOT NULL,
    chunk_id   TEXT NOT NULL REFERENCES chunks(id),
    start_line INTEGER NOT NULL,       -- 1-based, inclusive, in the source file
    end_line   INTEGER NOT NULL,
    heading    TEXT,                   -- section path ("Intro > Install") where known
    PRIMARY KEY (file_id, strategy, ordinal)
);
CREATE INDEX memberships_chunk ON memberships (chunk_id);

-- A chunk is live while some live file references it.
CREATE VIEW live_chunks AS
    SELECT DISTINCT m.chunk_id AS chunk_id
    FROM memberships m JOIN files f ON f.id = m.file_id
    WHERE f.status = 'live';

-- Generation jobs: one per (chunk, prompt version, generator model). Leases, not locks.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    chunk_id         TEXT NOT NULL REFERENCES chunks(id),
    prompt_version   TEXT NOT NULL,
    model            TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,   -- failed LLM attempts (outages don't count)
    repairs          INTEGER NOT NULL DEFAULT 0,   -- retries after invalid output
    next_attempt_at  REAL NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    claim_token      TEXT,
    last_error       TEXT,
    dead_reason      TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    UNIQUE (chunk_id, prompt_version, model)
);
CREATE INDEX jobs_claim ON jobs (state, next_attempt_at);

-- Every LLM attempt's outcome that was not a stored pair (retries, rejections, errors).
CREATE TABLE job_events (
    id      INTEGER PRIMARY KEY,
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,   -- rejected | error | outage | truncated | dead | lease_expired
    reason  TEXT NOT NULL,   -- short machine-readable reason, e.g. 'not_grounded', 'http_503'
    detail  TEXT             -- human-readable detail / raw excerpt
);
CREATE INDEX job_events_job ON job_events (job_id);

-- Question/answer pairs with provenance. retired_at is set when the chunk stops being live.
CREATE TABLE pairs (
    id                INTEGER PRIMARY KEY,
    job_id            INTEGER NOT NULL REFERENCES jobs(id),
    idx               INTEGER NOT NULL,          -- 0 .. pairs_per_chunk-1
    chunk_id          TEXT NOT NULL REFERENCES chunks(id),
    repo              TEXT NOT NULL,
    path              TEXT NOT NULL,
    git_commit        TEXT,
    strategy          TEXT NOT NULL,
    start_line        INTEGER,
    end_line          INTEGER,
    chunk_preview     TEXT NOT NULL,
    question          TEXT NOT NULL,
    answer            TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_version    TEXT NOT NULL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_ms        REAL,
    created_at        REAL NOT NULL,
    retired_at        REAL,
    UNIQUE (job_id, idx)
);
CREATE INDEX pairs_chunk ON pairs (chunk_id);
CREATE INDEX pairs_repo_live ON pairs (repo, retired_at);

-- Training runs (the child process writes models/runs/<id>/).
CREATE TABLE training_runs (
    id            TEXT PRIMARY KEY,              -- e.g. 20261125T130102-3fa2
    trigger       TEXT NOT NULL,                 -- threshold | signal | manual | cli
    state         TEXT NOT NULL
                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'rejected',
                                   'registered')),
    requested_at  REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    base_model    TEXT,
    n_train       INTEGER,
    n_holdout     INTEGER,
    live_pairs    INTEGER,                       -- live pairs when the run was requested
    run_dir       TEXT,
    pid           INTEGER,
    metrics_json  TEXT,                          -- copy of metrics.json
    error         TEXT                           -- failure / rejection reason (tail of stderr)
);

-- Models registered in Ollama, newest last.
CREATE TABLE registrations (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT REFERENCES training_runs(id),
    model_tag   TEXT NOT NULL,                   -- <name>:<run-id>
    alias       TEXT NOT NULL,                   -- <name>:latest
    state       TEXT NOT NULL
                CHECK (state IN ('creating', 'active', 'superseded', 'deleted', 'failed')),
    mode        TEXT NOT NULL,                   -- safetensors | gguf
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    error       TEXT
);

-- Small key/value facts the daemon publishes (breaker state, generator errors, ...).
CREATE TABLE meta (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
