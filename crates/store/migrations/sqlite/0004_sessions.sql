-- Portal sessions. The cookie carries a random id; only its SHA-256 is stored, as for
-- tokens. `subject` is NULL while an OpenID Connect sign-in is under way (the row then keeps
-- the state, nonce and PKCE verifier in `data`). `csrf` is the token every form of the
-- session must send back. Expired rows are refused on read and pruned a few at a time on
-- writes.
CREATE TABLE sessions (
    hash       TEXT PRIMARY KEY,
    subject    TEXT,
    csrf       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX sessions_expiry ON sessions (expires_at);
