-- Runs of gated runbooks (issue 17): the same table as SQLite's 0009_runs.sql, which
-- explains it.
CREATE TABLE runs (
    id         TEXT PRIMARY KEY,
    runbook    TEXT NOT NULL,
    runner     TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX runs_by_runner ON runs (runner, created_at);
CREATE INDEX runs_by_created ON runs (created_at);
