-- Never edit an applied migration; add a new numbered file.
-- Bearer tokens, stored as the SHA-256 of the token (hex): the token itself is shown once.
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    owner        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
-- A name is held by one token until it is revoked.
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;

-- Every mutating request: who, what, the outcome. Never a body or a query string.
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    owner    TEXT,
    role     TEXT,
    method   TEXT NOT NULL,
    route    TEXT NOT NULL,
    target   TEXT NOT NULL,
    -- What the request made or acted on when the path does not say (a new env's id).
    subject  TEXT,
    status   BIGINT NOT NULL,
    client   TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);

-- CI keys are scoped per owner: two teams may use the same key.
DROP INDEX envs_live_key;
CREATE UNIQUE INDEX envs_live_owner_key ON envs (owner, env_key) WHERE state NOT IN ('gone', 'failed') AND env_key IS NOT NULL;
CREATE INDEX envs_owner ON envs (owner, state);
