-- Version 4: ids are resolved from a prefix typed short (`braid show 8nxt`):
-- an index that serves byte-wise range comparisons whatever the database's
-- collation.
CREATE INDEX tasks_id_pattern ON tasks (id text_pattern_ops);
