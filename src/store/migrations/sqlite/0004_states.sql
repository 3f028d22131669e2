-- Short-lived state of browser flows and throttles, shared by whatever
-- serves the next request: entries (login flows, browser sessions, pending
-- identity-provider sign-ins) by kind and SHA-256 key, with their expiry;
-- and counters of events in a fixed window (failed logins,
-- registrations). Times are milliseconds since the epoch.
CREATE TABLE states (
    kind TEXT NOT NULL,
    key BLOB NOT NULL,
    value TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE counters (
    kind TEXT NOT NULL,
    key BLOB NOT NULL,
    count INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
