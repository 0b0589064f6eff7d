-- Never edit an applied migration; add a new numbered file.
-- Warm pools (issue 16). A pool keeps `min`..`max` envs of one template + answers built
-- and ready (state `pooled`); a matching create takes one. `claims`/`misses` count takes
-- and creates that found none, for the hit rate; `pool_misses` the misses by reason.
CREATE TABLE pools (
    name       TEXT PRIMARY KEY,
    template   TEXT NOT NULL,
    answers    TEXT NOT NULL,
    min_size   BIGINT NOT NULL,
    max_size   BIGINT NOT NULL,
    claims     BIGINT NOT NULL DEFAULT 0,
    misses     BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
CREATE TABLE pool_misses (
    pool   TEXT NOT NULL,
    reason TEXT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (pool, reason)
);
-- The pool key (template name:version + a hash of the resolved answers) of an env built
-- for a pool, until a create takes it; and the name its host objects were made under
-- when it was renamed by a take (the node container keeps its pool name).
ALTER TABLE envs ADD COLUMN pool TEXT;
ALTER TABLE envs ADD COLUMN host_name TEXT;
CREATE INDEX envs_pool ON envs (pool, state);
