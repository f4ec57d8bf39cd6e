-- Slack interactions (issue 16): the same table as SQLite's 0008_slack_interactions.sql,
-- which explains it.
CREATE TABLE slack_interactions (
    key         TEXT PRIMARY KEY,
    payload     TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX slack_interactions_by_age ON slack_interactions (received_at);
