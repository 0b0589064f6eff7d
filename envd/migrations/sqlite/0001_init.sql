-- Never edit an applied migration; add a new numbered file.
CREATE TABLE envs (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    env_key         TEXT,
    owner           TEXT NOT NULL,
    template        TEXT NOT NULL,
    template_src    TEXT NOT NULL,
    answers         TEXT NOT NULL,
    labels          TEXT NOT NULL,
    state           TEXT NOT NULL,
    desired         TEXT NOT NULL,
    step            TEXT NOT NULL,
    error           TEXT,
    node_ip         TEXT,
    keep_on_failure INTEGER NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    ready_at        BIGINT,
    expires_at      BIGINT NOT NULL
);
-- Names and CI keys are unique among live envs; history keeps its rows.
CREATE UNIQUE INDEX envs_live_name ON envs (name) WHERE state NOT IN ('gone', 'failed');
CREATE UNIQUE INDEX envs_live_key ON envs (env_key) WHERE state NOT IN ('gone', 'failed') AND env_key IS NOT NULL;
CREATE INDEX envs_state ON envs (state);

CREATE TABLE leases (
    ip         TEXT PRIMARY KEY,
    env_id     TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    env_id      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    step        TEXT NOT NULL,
    message     TEXT NOT NULL,
    duration_ms BIGINT
);
CREATE INDEX events_env ON events (env_id, id);
