-- Short-lived state of browser flows and throttles, which every replica
-- reads and writes (a browser's next request may land on any): entries (login flows, browser sessions, pending
-- identity-provider sign-ins) by kind and SHA-256 key, with their expiry;
-- and counters of events in a fixed window (failed logins,
-- registrations). Times are milliseconds since the epoch.
CREATE TABLE states (
    kind TEXT NOT NULL,
    key BYTEA NOT NULL,
    value TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE counters (
    kind TEXT NOT NULL,
    key BYTEA NOT NULL,
    count BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
