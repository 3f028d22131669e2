-- People who signed in through an identity provider: the claims of their
-- last check, which the access rules are evaluated against again at every
-- refresh; the provider's refresh token when it gave one, to ask it again
-- then; and when they last signed in (for max_session_age).
CREATE TABLE people (
    subject TEXT PRIMARY KEY,
    claims TEXT NOT NULL,
    idp_refresh_token TEXT,
    signed_in_at INTEGER NOT NULL
);
