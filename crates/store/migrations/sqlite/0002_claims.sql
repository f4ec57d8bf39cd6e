-- The worker asks when the next claim runs out; few jobs are claimed at a time.
CREATE INDEX jobs_by_claim ON jobs (claimed_until) WHERE claimed_until IS NOT NULL;
