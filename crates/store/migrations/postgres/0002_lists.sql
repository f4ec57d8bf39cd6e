-- Lists answered from indexes (issue 14, item 3): the same tables and indexes as SQLite's
-- 0006_lists.sql, which explains them.
CREATE TABLE request_people (
    person     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    state      TEXT NOT NULL,
    resource   TEXT NOT NULL,
    reviewable INTEGER NOT NULL,
    PRIMARY KEY (person, created_at, request_id)
);
CREATE INDEX request_people_pending ON request_people (person, created_at, request_id)
    WHERE state = 'pending';
CREATE INDEX request_people_reviewable ON request_people (person, created_at, request_id)
    WHERE reviewable = 1;

CREATE INDEX requests_by_time ON requests (created_at, id);
CREATE INDEX grants_by_time ON grants (created_at, id);
CREATE INDEX grants_by_subject ON grants (subject, created_at, id);
CREATE INDEX grants_by_resource ON grants (resource, created_at, id);

CREATE TABLE store_chores (
    name TEXT PRIMARY KEY
);
INSERT INTO store_chores (name) VALUES ('request_people');
