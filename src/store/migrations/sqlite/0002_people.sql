-- People who signed in through an identity provider: the claims of their
-- last sign-in, which the access rules are evaluated against again at
-- every refresh.
CREATE TABLE people (
    subject TEXT PRIMARY KEY,
    claims TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
