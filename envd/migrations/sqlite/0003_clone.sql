-- Never edit an applied migration; add a new numbered file.
-- Init files uploaded with the create request (JSON: pod -> [{name, content}]), and the
-- env a clone was made from, with whether its databases' contents are to be copied.
ALTER TABLE envs ADD COLUMN init TEXT NOT NULL DEFAULT '{}';
ALTER TABLE envs ADD COLUMN clone_of TEXT;
ALTER TABLE envs ADD COLUMN with_data INTEGER NOT NULL DEFAULT 0;
