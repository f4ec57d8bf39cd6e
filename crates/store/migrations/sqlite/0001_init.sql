-- Requests and grants keep their full domain snapshot in `body` (JSON); the other columns
-- exist to be filtered on.
CREATE TABLE requests (
    id         TEXT PRIMARY KEY,
    resource   TEXT NOT NULL,
    requester  TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX requests_by_state ON requests (state, created_at);
CREATE INDEX requests_by_requester ON requests (requester, created_at);

CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    subject    TEXT NOT NULL,
    resource   TEXT NOT NULL,
    workflow   TEXT,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
-- Rule 5 asks, on every new request, whether the requester holds an active grant of the
-- resource or of its workflow: one index for each half of that question.
CREATE INDEX grants_by_subject_resource ON grants (subject, resource, state);
CREATE INDEX grants_by_subject_workflow ON grants (subject, workflow, state) WHERE workflow IS NOT NULL;
CREATE INDEX grants_by_state ON grants (state, created_at);

-- The audit log: append-only and hash-chained (each row carries the previous row's hash).
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    request_id TEXT,
    grant_id   TEXT,
    body       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Durable timers and the connector outbox, keyed so that scheduling twice leaves one row.
CREATE TABLE jobs (
    kind    TEXT NOT NULL,
    key     TEXT NOT NULL,
    due_at  INTEGER NOT NULL,
    -- Set while a worker runs the job; a job whose claim ran out is due again.
    claimed_until INTEGER,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX jobs_by_due ON jobs (due_at);

-- Bearer tokens, stored as SHA-256 hashes of the token text.
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
