-- Authorization codes, by SHA-256 (the code itself is never stored): the
-- grant it carries (JSON), the refresh-token family its tokens go to, when
-- it expires, and whether it was used; kept until forget_at so that a
-- replay is recognised and revokes what the first use issued.
CREATE TABLE codes (
    code_hash BLOB PRIMARY KEY,
    grant_json TEXT NOT NULL,
    family_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    forget_at INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
