-- The PostgreSQL schema: the same tables, columns and indexes as SQLite's migrations 1-5
-- (crates/store/migrations/sqlite), in PostgreSQL's types. Times are milliseconds since the
-- Unix epoch (BIGINT). Requests and grants keep their full domain snapshot in `body` (JSON
-- text); the other columns exist to be filtered on.
CREATE TABLE requests (
    id         TEXT PRIMARY KEY,
    resource   TEXT NOT NULL,
    requester  TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX requests_by_state ON requests (state, created_at, id);
CREATE INDEX requests_by_requester ON requests (requester, created_at, id);
CREATE INDEX requests_by_resource ON requests (resource, state, created_at, id);

CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    subject    TEXT NOT NULL,
    resource   TEXT NOT NULL,
    workflow   TEXT,
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX grants_by_subject_resource ON grants (subject, resource, state);
CREATE INDEX grants_by_subject_workflow ON grants (subject, workflow, state) WHERE workflow IS NOT NULL;
CREATE INDEX grants_by_state ON grants (state, created_at, id);

-- The audit log: append-only and hash-chained (each row carries the previous row's hash).
CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    request_id TEXT,
    grant_id   TEXT,
    body       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- The head of the chain and the writers' turn (see SQLite's 0005_replicas.sql).
CREATE TABLE chain_head (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     BIGINT NOT NULL,
    hash    TEXT NOT NULL,
    version BIGINT NOT NULL
);

-- Durable timers and the connector outbox, keyed so that scheduling twice leaves one row.
CREATE TABLE jobs (
    kind          TEXT NOT NULL,
    key           TEXT NOT NULL,
    due_at        BIGINT NOT NULL,
    -- Set while a holder runs the job; a job whose claim ran out is due again.
    claimed_until BIGINT,
    claimed_by    TEXT,
    PRIMARY KEY (kind, key)
);
CREATE INDEX jobs_by_due ON jobs (due_at);
CREATE INDEX jobs_by_claim ON jobs (claimed_until) WHERE claimed_until IS NOT NULL;
CREATE INDEX jobs_by_holder ON jobs (claimed_by) WHERE claimed_by IS NOT NULL;

-- Bearer tokens, stored as SHA-256 hashes of the token text.
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Callback secrets (rule 21).
CREATE TABLE callback_secrets (
    request_id TEXT PRIMARY KEY,
    secret     TEXT NOT NULL
);

-- The outbox of outcome callbacks (rules 22 and 23).
CREATE TABLE deliveries (
    id            TEXT PRIMARY KEY,
    request_id    TEXT NOT NULL,
    lane          TEXT NOT NULL,
    state         TEXT NOT NULL,
    next_at       BIGINT,
    claimed_until BIGINT,
    claimed_by    TEXT,
    created_at    BIGINT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX deliveries_by_request ON deliveries (request_id);
CREATE INDEX deliveries_by_claim ON deliveries (claimed_until) WHERE claimed_until IS NOT NULL;
CREATE INDEX deliveries_by_holder ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;

-- Idempotency keys of request creation (rule 25), per caller.
CREATE TABLE idempotency (
    subject         TEXT NOT NULL,
    key             TEXT NOT NULL,
    body_hash       TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    response        TEXT,
    expires_at      BIGINT NOT NULL,
    in_flight_until BIGINT,
    PRIMARY KEY (subject, key)
);
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);

-- Portal sessions (the cookie's SHA-256).
CREATE TABLE sessions (
    hash       TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
