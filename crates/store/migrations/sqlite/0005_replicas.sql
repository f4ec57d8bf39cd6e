-- Many writers (issue 14). Every write transaction first locks this one row, which holds the
-- head of the audit chain and a version bumped by each commit: writers take turns, each reads
-- what the previous one committed, and a writer's cache is trusted only while the version is
-- the one it committed. The row is written from the events when a store opens.
CREATE TABLE chain_head (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     INTEGER NOT NULL,
    hash    TEXT NOT NULL,
    version INTEGER NOT NULL
);

-- A claim names its holder (the store that took it), so that a heartbeat renews only its own
-- claims and a holder whose lease lapsed cannot complete the job.
ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
CREATE INDEX jobs_by_holder ON jobs (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE INDEX deliveries_by_holder ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;

-- Rule 25's "in flight": set while the first request with a key is being created, so that a
-- repeat on any replica gets 409; a creator that died leaves it to lapse.
ALTER TABLE idempotency ADD COLUMN in_flight_until INTEGER;
