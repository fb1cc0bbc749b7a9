-- 0001: certificates, agents, audit, heartbeat.
-- Times are UTC Unix nanoseconds (INTEGER); NULL means unset.

-- +goose Up

CREATE TABLE certificates (
	serial          TEXT    NOT NULL PRIMARY KEY,
	spiffe_id       TEXT    NOT NULL,
	kind            TEXT    NOT NULL DEFAULT '',
	cluster         TEXT    NOT NULL DEFAULT '',
	namespace       TEXT    NOT NULL DEFAULT '',
	service_account TEXT    NOT NULL DEFAULT '',
	pod_name        TEXT    NOT NULL DEFAULT '',
	pod_uid         TEXT    NOT NULL DEFAULT '',
	node_name       TEXT    NOT NULL DEFAULT '',
	caller          TEXT    NOT NULL DEFAULT '',
	not_before      INTEGER NOT NULL,
	not_after       INTEGER NOT NULL,
	sha256          BLOB,
	issuer_key_id   TEXT    NOT NULL DEFAULT '',
	issued_at       INTEGER NOT NULL,
	revoked_at      INTEGER
);

-- Listing is newest first (issued_at DESC, serial DESC); each filter index
-- ends with that order so a filtered page is an index range scan.
CREATE INDEX certificates_issued_at ON certificates (issued_at DESC, serial DESC);
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id, issued_at DESC, serial DESC);
CREATE INDEX certificates_namespace ON certificates (namespace, issued_at DESC, serial DESC);
CREATE INDEX certificates_node_name ON certificates (node_name, issued_at DESC, serial DESC);
CREATE INDEX certificates_not_after ON certificates (not_after);

CREATE TABLE agents (
	spiffe_id      TEXT    NOT NULL PRIMARY KEY,
	cluster        TEXT    NOT NULL DEFAULT '',
	node_name      TEXT    NOT NULL DEFAULT '',
	serial         TEXT    NOT NULL DEFAULT '',
	first_seen     INTEGER,
	last_seen      INTEGER,
	not_after      INTEGER,
	banned         INTEGER NOT NULL DEFAULT 0 CHECK (banned IN (0, 1)),
	bundle_seq_ack INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE audit (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	time    INTEGER NOT NULL,
	actor   TEXT    NOT NULL DEFAULT '',
	action  TEXT    NOT NULL DEFAULT '',
	subject TEXT    NOT NULL DEFAULT '',
	outcome TEXT    NOT NULL DEFAULT '',
	detail  TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX audit_time ON audit (time);
CREATE INDEX audit_actor ON audit (actor, id DESC);
CREATE INDEX audit_action ON audit (action, id DESC);

-- One row, rewritten by Ping so readiness proves the store can commit.
CREATE TABLE heartbeat (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	time INTEGER NOT NULL
);
