-- A round reads the fingerprints of its window by id and the known members of their class
-- chains by class, never all of an app's fingerprints. On a prefix of the class, so that
-- an entry stays within the bound on an index row (about 2.7 KB) whatever an agent sends.
-- Not built CONCURRENTLY: that waits for every open transaction, among them a detector
-- starting at the same time and waiting for the migrator's lock, which never ends; the
-- build holds writes to `fingerprints` for its duration instead.
CREATE INDEX IF NOT EXISTS fingerprints_by_class ON fingerprints (app, substr(class, 1, 200));
