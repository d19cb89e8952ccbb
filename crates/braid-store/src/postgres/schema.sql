-- braid schema on PostgreSQL, version 1: the same tables and meaning as
-- the SQLite schema. Integers are BIGINT throughout; `ord` keeps creation
-- order (SQLite's rowid).
CREATE TABLE tasks (
    ord           BIGINT GENERATED ALWAYS AS IDENTITY,
    id            TEXT PRIMARY KEY,
    title         TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    type          TEXT NOT NULL,
    priority      BIGINT NOT NULL,
    state         TEXT NOT NULL,
    parent        TEXT,
    labels        TEXT NOT NULL DEFAULT '[]',
    assignee      TEXT,
    acceptance    TEXT NOT NULL DEFAULT '',
    gates         TEXT NOT NULL DEFAULT '[]',
    agent         TEXT,
    branch        TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    closed_at     BIGINT,
    close_reason  TEXT,
    blockers      BIGINT NOT NULL DEFAULT 0,
    held_by       BIGINT NOT NULL DEFAULT 0,
    ready         BIGINT NOT NULL DEFAULT 0,
    lease_token   TEXT,
    lease_expires BIGINT,
    attempt       BIGINT NOT NULL DEFAULT 0
);
-- ready queue: only ready rows are in this index.
CREATE INDEX tasks_ready ON tasks(priority, created_at, ord) WHERE ready = 1;
CREATE INDEX tasks_ord ON tasks(ord);
CREATE INDEX tasks_parent ON tasks(parent, created_at);
CREATE INDEX tasks_state ON tasks(state, priority, created_at);
CREATE INDEX tasks_assignee ON tasks(assignee) WHERE assignee IS NOT NULL;
CREATE INDEX tasks_lease ON tasks(lease_expires) WHERE lease_expires IS NOT NULL;

-- from_id depends on to_id.
CREATE TABLE deps (
    from_id TEXT NOT NULL,
    to_id   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    PRIMARY KEY (from_id, to_id)
);
CREATE INDEX deps_to ON deps(to_id, kind);

CREATE TABLE labels (
    label TEXT NOT NULL,
    task  TEXT NOT NULL,
    PRIMARY KEY (label, task)
);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE events (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    task    TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX events_task ON events(task, seq) WHERE task IS NOT NULL;
