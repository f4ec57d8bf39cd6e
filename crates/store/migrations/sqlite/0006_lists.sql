-- Lists answered from indexes (issue 14, item 3). Pages are keyset pages over
-- (created_at, id), newest first, so every list needs an index that ends in those columns.

-- Everyone who sees a request without being an admin, one row per person and request, with
-- whether that person may decide the request now (`Request::audience` in the domain decides
-- both; the writer upserts a request's rows in the transaction that writes the request, and a
-- request's audience only grows, so rows are never deleted).
-- `state` and `resource` are the request's, repeated so that a person's rows can be filtered
-- without reading the requests.
CREATE TABLE request_people (
    person     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    state      TEXT NOT NULL,
    resource   TEXT NOT NULL,
    reviewable INTEGER NOT NULL,
    PRIMARY KEY (person, created_at, request_id)
) WITHOUT ROWID;
-- `state=pending`: only the rows of pending requests. Other states are most of the rows, so a
-- person's rows are walked for them (and for `resource`), as they are for the whole list.
CREATE INDEX request_people_pending ON request_people (person, created_at, request_id)
    WHERE state = 'pending';
-- The inbox (`reviewable_by=me`): only the rows of people who may decide now.
CREATE INDEX request_people_reviewable ON request_people (person, created_at, request_id)
    WHERE reviewable = 1;

-- An admin's unfiltered lists.
CREATE INDEX requests_by_time ON requests (created_at, id);
CREATE INDEX grants_by_time ON grants (created_at, id);
-- Grants a person may see: their own, and those of the resources they own.
CREATE INDEX grants_by_subject ON grants (subject, created_at, id);
CREATE INDEX grants_by_resource ON grants (resource, created_at, id);

-- Work the store does once when it next opens, because it needs the domain's rules (here:
-- `request_people` for the requests already stored). A row is deleted when its work is done.
CREATE TABLE store_chores (
    name TEXT PRIMARY KEY
);
INSERT INTO store_chores (name) VALUES ('request_people');
