-- Version 3: a write records the last event number it took, so its events
-- can be found again (they are numbered in the statement that appends them).
ALTER TABLE writes ADD COLUMN last_seq BIGINT;
