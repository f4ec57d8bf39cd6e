-- The Slack app (issue 16). `slack_links`: which Countersign user a Slack user acts as (rule
-- 35), one person per Slack account; `slack_messages`: every message posted about a request
-- (its channel and `ts`), so that each copy can be updated when the request changes (rule 36).
CREATE TABLE slack_links (
    account   TEXT PRIMARY KEY,
    person    TEXT NOT NULL,
    linked_at INTEGER NOT NULL
);
CREATE INDEX slack_links_by_person ON slack_links (person, linked_at);

CREATE TABLE slack_messages (
    request_id TEXT NOT NULL,
    channel    TEXT NOT NULL,
    ts         TEXT NOT NULL,
    posted_at  INTEGER NOT NULL,
    PRIMARY KEY (request_id, channel, ts)
);
