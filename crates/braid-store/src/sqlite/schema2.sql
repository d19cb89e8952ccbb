-- Version 2: the cost ledger. One row per agent attempt that reported its
-- usage, made from the attempt's `agent_finished` event by a trigger in
-- the same transaction, so the ledger never disagrees with the event log.
CREATE TABLE usage (
    id                 INTEGER PRIMARY KEY,
    seq                INTEGER NOT NULL,
    task               TEXT NOT NULL,
    at                 INTEGER NOT NULL,
    agent              TEXT NOT NULL,
    attempt            INTEGER,
    model              TEXT,
    session            TEXT,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_usd           REAL,
    turns              INTEGER,
    duration_ms        INTEGER NOT NULL,
    outcome            TEXT NOT NULL
);
CREATE INDEX usage_task ON usage(task, seq);
CREATE INDEX usage_at ON usage(at);

CREATE TRIGGER usage_ledger AFTER INSERT ON events
WHEN NEW.kind = 'agent_finished' AND json_type(NEW.payload, '$.usage') = 'object'
BEGIN
    INSERT INTO usage (seq, task, at, agent, attempt, model, session, input_tokens,
                       output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
                       turns, duration_ms, outcome)
    VALUES (
        NEW.seq, NEW.task, NEW.at,
        coalesce(json_extract(NEW.payload, '$.agent'), ''),
        json_extract(NEW.payload, '$.attempt'),
        json_extract(NEW.payload, '$.usage.model'),
        json_extract(NEW.payload, '$.usage.session'),
        coalesce(json_extract(NEW.payload, '$.usage.input_tokens'), 0),
        coalesce(json_extract(NEW.payload, '$.usage.output_tokens'), 0),
        coalesce(json_extract(NEW.payload, '$.usage.cache_read_tokens'), 0),
        coalesce(json_extract(NEW.payload, '$.usage.cache_write_tokens'), 0),
        json_extract(NEW.payload, '$.usage.cost_usd'),
        json_extract(NEW.payload, '$.usage.turns'),
        coalesce(json_extract(NEW.payload, '$.duration_ms'), 0),
        coalesce(json_extract(NEW.payload, '$.exit'), '')
    );
END;
