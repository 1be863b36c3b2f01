-- The device registry as schema version 1 left it, with data: the starting
-- point of the migration tests. Written out in full (not generated from
-- migrations[0]) so that an edit to a released migration shows up as a
-- failing test. Statements are separated by lines holding only ";".
CREATE TABLE schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT NOT NULL,
	applied_us BIGINT NOT NULL
)
;
INSERT INTO schema_migrations (version, name, applied_us) VALUES (1, 'devices', 1764000000000000)
;
CREATE TABLE devices (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL,
	email        TEXT NOT NULL,
	subject      TEXT NOT NULL,
	groups_json  TEXT NOT NULL,
	public_key   TEXT NOT NULL,
	address      TEXT NOT NULL,
	created_us   BIGINT NOT NULL,
	last_seen_us BIGINT,
	expires_us   BIGINT,
	revoked      BOOLEAN NOT NULL DEFAULT FALSE
)
;
CREATE UNIQUE INDEX devices_public_key ON devices (public_key)
;
CREATE INDEX devices_subject ON devices (subject)
;
CREATE INDEX devices_address ON devices (address)
;
-- alice: active, never seen, no expiry
INSERT INTO devices VALUES ('dev_a1ce0000000000000000000000', 'alice-laptop', 'alice@corp.example',
	'https://sso.corp.example#alice', '["eng","staff"]', 'AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=',
	'100.96.0.2', 1764000000000000, 1764000300000000, NULL, FALSE)
;
-- bob: revoked; version 1 did not record when
INSERT INTO devices VALUES ('dev_b0b00000000000000000000000', 'bob-phone', 'bob@corp.example',
	'https://sso.corp.example#bob', '[]', 'AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=',
	'100.96.0.3', 1764000000000000, NULL, NULL, TRUE)
;
-- carol: took bob's address after his revocation; expires far ahead
INSERT INTO devices VALUES ('dev_ca701000000000000000000000', 'carol-desktop', 'carol@corp.example',
	'https://sso.corp.example#carol', '["staff"]', 'AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=',
	'100.96.0.3', 1764000100000000, NULL, 4102444800000000, FALSE)
