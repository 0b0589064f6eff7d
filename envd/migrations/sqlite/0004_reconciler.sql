-- Never edit an applied migration; add a new numbered file.
-- One instance acts on an env at a time: the claim's holder (an envd instance id) renews
-- `expires_at` while it works; once it passed, another instance may take the env over.
CREATE TABLE claims (
    env_id     TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Config changes of live envs (`PATCH /v1/envs/{id}/pods/{pod}`), one generation each:
-- recorded with the answers before and after, applied by the env's loop, which records
-- how it went (`applied`) or goes back to the answers before (`rolling-back`, then
-- `rolled-back`, with why).
CREATE TABLE config_changes (
    env_id         TEXT NOT NULL,
    generation     BIGINT NOT NULL,
    pod            TEXT NOT NULL,
    answers_before TEXT NOT NULL,
    answers_after  TEXT NOT NULL,
    changed        TEXT NOT NULL,
    pods           TEXT NOT NULL,
    status         TEXT NOT NULL,
    outcome        TEXT,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (env_id, generation)
);
