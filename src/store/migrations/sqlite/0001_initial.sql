-- The first schema: signing keys, clients, refresh-token families and
-- their access tokens, revocations, consents.
CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, alg TEXT NOT NULL, pkcs8 BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE clients (client_id TEXT PRIMARY KEY, secret_hash BLOB, metadata TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE refresh_tokens (
  token_hash BLOB PRIMARY KEY, family_id TEXT NOT NULL, client_id TEXT NOT NULL, subject TEXT NOT NULL,
  scope TEXT NOT NULL, resource TEXT NOT NULL, expires_at INTEGER NOT NULL, rotated INTEGER NOT NULL DEFAULT 0);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE TABLE revoked_families (family_id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE family_access_tokens (jti TEXT PRIMARY KEY, family_id TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX family_access_tokens_family ON family_access_tokens (family_id);
CREATE TABLE revoked_access_tokens (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE consents (subject TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT NOT NULL, PRIMARY KEY (subject, client_id, scope));
