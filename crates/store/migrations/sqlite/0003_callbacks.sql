-- Callback secrets (rule 21): kept in full because deliveries are signed with them; returned
-- only in the response that created the request.
CREATE TABLE callback_secrets (
    request_id TEXT PRIMARY KEY,
    secret     TEXT NOT NULL
) WITHOUT ROWID;

-- The outbox of outcome callbacks (rules 22 and 23). `lane` is the receiver (scheme, host and
-- port), so that the worker can leave out receivers that already have enough calls running.
CREATE TABLE deliveries (
    id            TEXT PRIMARY KEY,
    request_id    TEXT NOT NULL,
    lane          TEXT NOT NULL,
    state         TEXT NOT NULL,
    next_at       INTEGER,
    claimed_until INTEGER,
    created_at    INTEGER NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX deliveries_by_request ON deliveries (request_id);
CREATE INDEX deliveries_by_claim ON deliveries (claimed_until) WHERE claimed_until IS NOT NULL;

-- Idempotency keys of request creation (rule 25), per caller.
CREATE TABLE idempotency (
    subject    TEXT NOT NULL,
    key        TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- The first response, once it has been sent.
    response   TEXT,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (subject, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);
