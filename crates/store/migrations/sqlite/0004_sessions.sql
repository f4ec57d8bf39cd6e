-- Portal sessions. The cookie carries a random id; only its SHA-256 is stored, as for
-- tokens. `subject` is the signed-in user (a sign-in under way is kept in memory, not
-- here). `csrf` is the token every form of the session must send back. Expired rows are
-- refused on read and pruned a few at a time on writes.
CREATE TABLE sessions (
    hash       TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX sessions_expiry ON sessions (expires_at);
