-- The first PostgreSQL schema: what SQLite's versions 1 and 2 hold.
-- Signing keys, clients, refresh-token families and their access tokens,
-- revocations, consents, and people signed in through an identity
-- provider. Times are seconds since the epoch.
CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, alg TEXT NOT NULL, pkcs8 BYTEA NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE clients (client_id TEXT PRIMARY KEY, secret_hash BYTEA, metadata TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE refresh_tokens (
  token_hash BYTEA PRIMARY KEY, family_id TEXT NOT NULL, client_id TEXT NOT NULL, subject TEXT NOT NULL,
  scope TEXT NOT NULL, resource TEXT NOT NULL, expires_at BIGINT NOT NULL, rotated BOOLEAN NOT NULL DEFAULT FALSE);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE TABLE revoked_families (family_id TEXT PRIMARY KEY, expires_at BIGINT NOT NULL);
CREATE TABLE family_access_tokens (jti TEXT PRIMARY KEY, family_id TEXT NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX family_access_tokens_family ON family_access_tokens (family_id);
CREATE TABLE revoked_access_tokens (jti TEXT PRIMARY KEY, expires_at BIGINT NOT NULL);
CREATE TABLE consents (subject TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT NOT NULL, PRIMARY KEY (subject, client_id, scope));
CREATE TABLE people (subject TEXT PRIMARY KEY, claims TEXT NOT NULL, idp_refresh_token TEXT, signed_in_at BIGINT NOT NULL);
