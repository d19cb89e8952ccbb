-- Version 2: writes that may be retried. A write records its id (chosen by
-- the caller) and what it did in the same transaction, so a call whose
-- COMMIT answer was lost with the connection can learn, on a new one,
-- whether it landed and what it returned, instead of applying it twice.
CREATE TABLE writes (
    id     TEXT PRIMARY KEY,
    at     BIGINT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX writes_at ON writes(at);
