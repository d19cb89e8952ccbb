-- braid schema, version 1. Derived columns (blockers, held_by, ready) are
-- maintained by the write path; see braid_core::graph.
CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    title         TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    type          TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    state         TEXT NOT NULL,
    parent        TEXT,
    labels        TEXT NOT NULL DEFAULT '[]',
    assignee      TEXT,
    acceptance    TEXT NOT NULL DEFAULT '',
    gates         TEXT NOT NULL DEFAULT '[]',
    agent         TEXT,
    branch        TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    closed_at     INTEGER,
    close_reason  TEXT,
    blockers      INTEGER NOT NULL DEFAULT 0,
    held_by       INTEGER NOT NULL DEFAULT 0,
    ready         INTEGER NOT NULL DEFAULT 0,
    lease_token   TEXT,
    lease_expires INTEGER,
    attempt       INTEGER NOT NULL DEFAULT 0
);
-- ready queue: only ready rows are in this index.
CREATE INDEX tasks_ready ON tasks(priority, created_at) WHERE ready = 1;
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
) WITHOUT ROWID;
CREATE INDEX deps_to ON deps(to_id, kind);

CREATE TABLE labels (
    label TEXT NOT NULL,
    task  TEXT NOT NULL,
    PRIMARY KEY (label, task)
) WITHOUT ROWID;

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    task    TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX events_task ON events(task, seq) WHERE task IS NOT NULL;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
