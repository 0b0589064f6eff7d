-- Scheduled jobs and the pre-expiry warning.
ALTER TABLE envs ADD COLUMN warned_at BIGINT;

-- One row per job run. A scheduled run's `slot` is its cron time: the unique index lets
-- only one of several envd on one database take it. Runs asked by hand have no slot.
CREATE TABLE job_runs (
    id          BIGSERIAL PRIMARY KEY,
    job         TEXT NOT NULL,
    slot        BIGINT,
    runner      TEXT NOT NULL,
    dry_run     INTEGER NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    ok          INTEGER,
    result      TEXT
);
CREATE UNIQUE INDEX job_runs_slot ON job_runs (job, slot);
CREATE INDEX job_runs_job ON job_runs (job, id);
