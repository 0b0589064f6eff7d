-- Never edit an applied migration; add a new numbered file.
-- Images owners uploaded (`envd images push`), by the reference templates name them
-- with; `id` is the unguessable key nodes pull them under (`up/<id>:latest`) from
-- envd's registry, whose blob store holds the bytes.
CREATE TABLE images (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    ref        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    bytes      BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (owner, ref)
);
