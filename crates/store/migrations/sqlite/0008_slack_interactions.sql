-- Slack interactions stored before they are acknowledged (issue 16, rule 35): a click, a
-- slash command or a modal's submission, by its key (Slack's `trigger_id`), with the payload
-- as received. A second delivery of the same key is acknowledged and not acted on; one that
-- was stored and never acted on (its process died) is replayed from here. Rows older than a
-- day are forgotten, a few at a time.
CREATE TABLE slack_interactions (
    key         TEXT PRIMARY KEY,
    payload     TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX slack_interactions_by_age ON slack_interactions (received_at);
