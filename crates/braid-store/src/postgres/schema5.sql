-- Version 5: the cost ledger. One row per agent attempt that reported its
-- usage, made from the attempt's `agent_finished` event by a trigger in
-- the same transaction, so the ledger never disagrees with the event log.
CREATE TABLE usage (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq                BIGINT NOT NULL,
    task               TEXT NOT NULL,
    at                 BIGINT NOT NULL,
    agent              TEXT NOT NULL,
    attempt            BIGINT,
    model              TEXT,
    session            TEXT,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_usd           DOUBLE PRECISION,
    turns              BIGINT,
    duration_ms        BIGINT NOT NULL,
    outcome            TEXT NOT NULL
);
CREATE INDEX usage_task ON usage(task, seq);
CREATE INDEX usage_at ON usage(at);

CREATE FUNCTION usage_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p jsonb := NEW.payload::jsonb;
    u jsonb := p -> 'usage';
BEGIN
    IF jsonb_typeof(u) = 'object' THEN
        INSERT INTO usage (seq, task, at, agent, attempt, model, session, input_tokens,
                           output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
                           turns, duration_ms, outcome)
        VALUES (
            NEW.seq, NEW.task, NEW.at,
            coalesce(p ->> 'agent', ''),
            (p ->> 'attempt')::bigint,
            u ->> 'model',
            u ->> 'session',
            coalesce((u ->> 'input_tokens')::bigint, 0),
            coalesce((u ->> 'output_tokens')::bigint, 0),
            coalesce((u ->> 'cache_read_tokens')::bigint, 0),
            coalesce((u ->> 'cache_write_tokens')::bigint, 0),
            (u ->> 'cost_usd')::double precision,
            (u ->> 'turns')::bigint,
            coalesce((p ->> 'duration_ms')::bigint, 0),
            coalesce(p ->> 'exit', '')
        );
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER usage_ledger AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.kind = 'agent_finished') EXECUTE FUNCTION usage_ledger();
