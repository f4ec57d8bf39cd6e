-- The worker asks when the next claim runs out; few jobs are claimed at a time.
CREATE INDEX jobs_by_claim ON jobs (claimed_until) WHERE claimed_until IS NOT NULL;

-- Lists are ordered newest first by (created_at, id): with `id` in the index, SQLite walks the
-- index and stops at the limit instead of sorting every matching row.
DROP INDEX requests_by_state;
DROP INDEX requests_by_requester;
CREATE INDEX requests_by_state ON requests (state, created_at, id);
CREATE INDEX requests_by_requester ON requests (requester, created_at, id);
CREATE INDEX requests_by_resource ON requests (resource, state, created_at, id);
DROP INDEX grants_by_state;
CREATE INDEX grants_by_state ON grants (state, created_at, id);
