-- A round reads the fingerprints of its window by id and those of their class chains known
-- before the release by chain, never all of an app's fingerprints.
CREATE INDEX fingerprints_by_chain ON fingerprints (app, class, causes);
