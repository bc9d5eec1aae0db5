-- CloudEvents ids are any non-empty string, unique only together with the source:
-- the host's per-event notes key on both, as given.
ALTER TABLE eventhost_inflight ALTER COLUMN event_id TYPE text;
ALTER TABLE eventhost_inflight ADD COLUMN source text NOT NULL DEFAULT '';
ALTER TABLE eventhost_inflight DROP CONSTRAINT eventhost_inflight_pkey;
ALTER TABLE eventhost_inflight ADD PRIMARY KEY (plugin, event_id, source);
-- A head is its id and source (another publisher's event with the same id is not it).
ALTER TABLE eventhost_held_aggregates ALTER COLUMN head_event_id TYPE text;
ALTER TABLE eventhost_held_aggregates ADD COLUMN head_source text NOT NULL DEFAULT '';
