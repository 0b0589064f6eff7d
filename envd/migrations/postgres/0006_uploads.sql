-- Never edit an applied migration; add a new numbered file.
-- Directories uploaded with a create request (`envd create --dir POD=DIR`): per env and
-- pod, a gzip'd tar as base64, copied into the pod's `dirs:` paths whenever its
-- containers are created. Freed with the env.
CREATE TABLE uploads (
    env_id TEXT NOT NULL,
    pod    TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (env_id, pod)
);
