-- Research discovery and usage requests (PostgreSQL). Append-only.

-- Opt-ins of a party (`account:<id>` patients, `org:<id>` institutions for the records they
-- still own): findable by research search, counted in statistics. Absent means off.
CREATE TABLE party_preferences (
    party TEXT PRIMARY KEY,
    discoverable BIGINT NOT NULL,
    contribute_statistics BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Numeric observation values per record, for range queries.
CREATE TABLE record_values (
    record_id TEXT NOT NULL REFERENCES records(id),
    code TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    unit TEXT NOT NULL
);
CREATE INDEX record_values_record ON record_values (record_id);

-- The birth date of the person a record is about (days since 1970-01-01), for age ranges.
ALTER TABLE records ADD COLUMN subject_birth_day BIGINT;

-- Every change that can alter what the research index holds for a subject, in order, so that
-- every server over one database follows the same sequence.
CREATE TABLE index_changes (
    seq BIGSERIAL PRIMARY KEY,
    subject TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE TABLE studies (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    title TEXT NOT NULL,
    purpose TEXT NOT NULL,
    ethics_reference TEXT NOT NULL,
    contact TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE study_searches (
    id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES studies(id),
    query_text TEXT NOT NULL,
    disclosed_count BIGINT,
    at BIGINT NOT NULL
);
CREATE INDEX study_searches_repeat ON study_searches (study_id, query_text, at);

-- Which subject a handle stands for in a study. Never leaves the server.
CREATE TABLE study_handles (
    study_id TEXT NOT NULL REFERENCES studies(id),
    handle TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (study_id, handle)
);

CREATE TABLE usage_requests (
    id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES studies(id),
    requested_by TEXT NOT NULL,
    owner TEXT NOT NULL,
    subject TEXT NOT NULL,
    handle TEXT NOT NULL,
    scope TEXT NOT NULL,
    actions TEXT NOT NULL,
    anonymization TEXT NOT NULL,
    grant_days BIGINT NOT NULL,
    message TEXT NOT NULL,
    reward_amount TEXT,
    reward_currency TEXT,
    reward_description TEXT,
    reward_state TEXT,
    state TEXT NOT NULL,
    grant_id TEXT,
    answer_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX usage_requests_owner ON usage_requests (owner, state);
CREATE INDEX usage_requests_study ON usage_requests (study_id);

-- Grants made by accepting a usage request belong to its study.
ALTER TABLE grants ADD COLUMN study_id TEXT;

-- Persisted inbox. The recipient is a party: a person's account or an organisation.
CREATE TABLE notifications (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    read_at BIGINT
);
CREATE INDEX notifications_recipient ON notifications (recipient, seq);

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id),
    notification_id TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    state TEXT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
