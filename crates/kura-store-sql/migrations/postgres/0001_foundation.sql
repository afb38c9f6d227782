-- Foundation schema (PostgreSQL). Append-only: never edit a migration that has landed.
-- Times are milliseconds since the Unix epoch (BIGINT); parties are `org:<id>` / `account:<id>`.

CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    org_id TEXT REFERENCES orgs(id),
    totp_secret TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE machine_clients (
    client_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    org_id TEXT NOT NULL REFERENCES orgs(id),
    public_key_pem TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE client_assertion_ids (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);

CREATE TABLE link_codes (
    code_hash TEXT PRIMARY KEY,
    institution TEXT NOT NULL REFERENCES orgs(id),
    mrn TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE patient_links (
    institution TEXT NOT NULL REFERENCES orgs(id),
    mrn TEXT NOT NULL,
    patient TEXT NOT NULL REFERENCES accounts(id),
    linked_at BIGINT NOT NULL,
    PRIMARY KEY (institution, mrn)
);
CREATE INDEX patient_links_patient ON patient_links (patient);

CREATE TABLE records (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    institution TEXT NOT NULL REFERENCES orgs(id),
    mrn TEXT NOT NULL,
    format TEXT NOT NULL,
    state TEXT NOT NULL,
    document_category TEXT,
    blob_key TEXT,
    wrapped_key BYTEA,
    content_hash TEXT,
    size BIGINT NOT NULL,
    derived_from TEXT,
    provenance TEXT NOT NULL,
    held_under TEXT,
    moved_to TEXT,
    moved_at BIGINT,
    moved_by TEXT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX records_owner ON records (owner, state);
CREATE INDEX records_local_patient ON records (institution, mrn);
CREATE INDEX records_held_under ON records (held_under);

CREATE TABLE record_parts (
    record_id TEXT NOT NULL REFERENCES records(id),
    idx BIGINT NOT NULL,
    category TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    PRIMARY KEY (record_id, idx)
);

CREATE TABLE record_labels (
    record_id TEXT NOT NULL REFERENCES records(id),
    label TEXT NOT NULL,
    PRIMARY KEY (record_id, label)
);
CREATE INDEX record_labels_by_label ON record_labels (label, record_id);

CREATE TABLE custody_ledger (
    seq BIGSERIAL PRIMARY KEY,
    record_id TEXT NOT NULL,
    event TEXT NOT NULL,
    from_owner TEXT,
    to_owner TEXT NOT NULL,
    transfer_id TEXT,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX custody_ledger_record ON custody_ledger (record_id, seq);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    grantee TEXT NOT NULL,
    selector_kind TEXT NOT NULL,
    selector TEXT NOT NULL,
    scope TEXT NOT NULL,
    actions TEXT NOT NULL,
    anonymization TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    purpose TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX grants_owner ON grants (owner);
CREATE INDEX grants_grantee ON grants (grantee);

CREATE TABLE delegations (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL REFERENCES accounts(id),
    patient TEXT NOT NULL REFERENCES accounts(id),
    kind TEXT NOT NULL,
    powers TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX delegations_agent ON delegations (agent);
CREATE INDEX delegations_patient ON delegations (patient);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    on_behalf_of TEXT NOT NULL,
    action TEXT NOT NULL,
    record_id TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    subject_patient TEXT,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log (subject_patient, seq);

-- The chain head: one row, locked by every writing transaction first so that audit entries
-- are appended strictly one after another.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
