-- The Slack app (issue 16): the same tables as SQLite's 0007_slack.sql, which explains them.
CREATE TABLE slack_links (
    account   TEXT PRIMARY KEY,
    person    TEXT NOT NULL,
    linked_at BIGINT NOT NULL
);
CREATE INDEX slack_links_by_person ON slack_links (person, linked_at);

CREATE TABLE slack_messages (
    request_id TEXT NOT NULL,
    channel    TEXT NOT NULL,
    ts         TEXT NOT NULL,
    posted_at  BIGINT NOT NULL,
    PRIMARY KEY (request_id, channel, ts)
);
