-- 00002: admin controls (deny list, evictions, the control sequence that
-- replicas poll), what agents report, replicas' heartbeats, and indexes for
-- the admin filters.

-- +goose Up
ALTER TABLE agents ADD COLUMN workloads INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN evicted_at INTEGER;

CREATE TABLE denied_identities (
	spiffe_id  TEXT    NOT NULL PRIMARY KEY,
	created_at INTEGER,
	actor      TEXT    NOT NULL DEFAULT '',
	reason     TEXT    NOT NULL DEFAULT ''
);

-- One row; every change to bans, evictions or the deny list increments it
-- in the same transaction.
CREATE TABLE control_sequence (
	id  INTEGER PRIMARY KEY CHECK (id = 1),
	seq INTEGER NOT NULL
);
INSERT INTO control_sequence (id, seq) VALUES (1, 0);

CREATE INDEX certificates_revoked ON certificates (kind, revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX certificates_caller ON certificates (caller, issued_at DESC, serial DESC);

CREATE TABLE replicas (
	name                   TEXT    NOT NULL PRIMARY KEY,
	started_at             INTEGER,
	seen_at                INTEGER,
	health                 TEXT    NOT NULL DEFAULT '',
	intermediate_key_id    TEXT    NOT NULL DEFAULT '',
	intermediate_not_after INTEGER
);
