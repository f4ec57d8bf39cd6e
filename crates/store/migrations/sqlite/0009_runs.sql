-- Runs of gated runbooks (issue 17). The run's full snapshot (its runbook's steps as they
-- were when it started, and each completed step's output: the checkpoint, rule 37) is in
-- `body`; the other columns exist to be filtered on.
CREATE TABLE runs (
    id         TEXT PRIMARY KEY,
    runbook    TEXT NOT NULL,
    runner     TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX runs_by_runner ON runs (runner, created_at);
CREATE INDEX runs_by_created ON runs (created_at);
