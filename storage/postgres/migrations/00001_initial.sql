-- 00001: certificates, agents, audit, heartbeat, the shared trust bundle and
-- the shared self-signed root.
-- Times are UTC Unix nanoseconds (BIGINT, exact, like the SQLite store);
-- NULL means unset.

-- +goose Up
CREATE TABLE certificates (
	serial          TEXT   NOT NULL PRIMARY KEY,
	spiffe_id       TEXT   NOT NULL,
	kind            TEXT   NOT NULL DEFAULT '',
	cluster         TEXT   NOT NULL DEFAULT '',
	namespace       TEXT   NOT NULL DEFAULT '',
	service_account TEXT   NOT NULL DEFAULT '',
	pod_name        TEXT   NOT NULL DEFAULT '',
	pod_uid         TEXT   NOT NULL DEFAULT '',
	node_name       TEXT   NOT NULL DEFAULT '',
	caller          TEXT   NOT NULL DEFAULT '',
	not_before      BIGINT NOT NULL,
	not_after       BIGINT NOT NULL,
	sha256          BYTEA,
	issuer_key_id   TEXT   NOT NULL DEFAULT '',
	issued_at       BIGINT NOT NULL,
	revoked_at      BIGINT
);

-- Listing is newest first (issued_at DESC, serial DESC); each filter index
-- ends with that order so a filtered page is an index range scan.
CREATE INDEX certificates_issued_at ON certificates (issued_at DESC, serial DESC);
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id, issued_at DESC, serial DESC);
CREATE INDEX certificates_namespace ON certificates (namespace, issued_at DESC, serial DESC);
CREATE INDEX certificates_node_name ON certificates (node_name, issued_at DESC, serial DESC);
-- Retention deletes by expiry in small batches.
CREATE INDEX certificates_not_after ON certificates (not_after);

CREATE TABLE agents (
	spiffe_id      TEXT    NOT NULL PRIMARY KEY,
	cluster        TEXT    NOT NULL DEFAULT '',
	node_name      TEXT    NOT NULL DEFAULT '',
	serial         TEXT    NOT NULL DEFAULT '',
	first_seen     BIGINT,
	last_seen      BIGINT,
	not_after      BIGINT,
	banned         BOOLEAN NOT NULL DEFAULT FALSE,
	bundle_seq_ack BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE audit (
	id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	time    BIGINT NOT NULL,
	actor   TEXT   NOT NULL DEFAULT '',
	action  TEXT   NOT NULL DEFAULT '',
	subject TEXT   NOT NULL DEFAULT '',
	outcome TEXT   NOT NULL DEFAULT '',
	detail  TEXT   NOT NULL DEFAULT ''
);

CREATE INDEX audit_time ON audit (time);
CREATE INDEX audit_actor ON audit (actor, id DESC);
CREATE INDEX audit_action ON audit (action, id DESC);

-- One row per replica, rewritten by Ping so readiness proves the store can
-- commit.
CREATE TABLE heartbeat (
	replica TEXT   NOT NULL PRIMARY KEY,
	time    BIGINT NOT NULL
);

-- The trust bundle every replica serves: the roots (concatenated DER) and a
-- sequence that grows with every change. A change is announced with
-- NOTIFY lanyard_bundle.
CREATE TABLE bundles (
	trust_domain TEXT   NOT NULL PRIMARY KEY,
	sequence     BIGINT NOT NULL,
	roots        BYTEA  NOT NULL,
	updated_at   BIGINT NOT NULL
);

-- The self-signed root shared by every replica of a trust domain, created
-- once under an advisory lock. The key is sealed (AES-256-GCM) with a key
-- only the replicas have (a file or Kubernetes Secret), never stored plain.
CREATE TABLE shared_roots (
	trust_domain TEXT   NOT NULL PRIMARY KEY,
	cert         BYTEA  NOT NULL,
	sealed_key   BYTEA  NOT NULL,
	created_at   BIGINT NOT NULL
);
