-- The transactional outbox. Producers insert rows in their own transaction (see
-- `eventhost::outbox::enqueue`); the relay publishes them and marks them.
--
-- `seq` is the publication order: the relay claims by status in `seq` order and never
-- publishes an event while an earlier event of the same aggregate is still pending.
-- `seq` is deliberately indexed only among pending rows: an index over all rows would
-- let the planner walk every published row awaiting the purge to find the pending ones.
CREATE TABLE outbox_events (
    event_id        uuid PRIMARY KEY,
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    aggregate_type  text NOT NULL,
    aggregate_id    text NOT NULL,
    event_type      text NOT NULL,
    source          text NOT NULL,
    payload         jsonb NOT NULL,
    schema_version  integer NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
    occurred_at     timestamptz NOT NULL,
    -- Message headers: W3C trace context (`traceparent`, `tracestate`) and other metadata.
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'published', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);

-- The relay's claim: due pending rows in `seq` order. Partial, so it holds only the
-- backlog (not the millions of published rows waiting for the purge), and it also
-- serves the backlog count and the oldest-pending age.
CREATE INDEX outbox_events_pending ON outbox_events (seq) INCLUDE (next_attempt_at)
    WHERE status = 'pending';
-- The nearest earlier pending event of an aggregate (and its retry time), for the order rule.
CREATE INDEX outbox_events_pending_aggregate
    ON outbox_events (aggregate_type, aggregate_id, seq) INCLUDE (next_attempt_at)
    WHERE status = 'pending';
-- The purge of published rows past the retention period.
CREATE INDEX outbox_events_published ON outbox_events (published_at)
    WHERE status = 'published';
-- Dead letters: counted and replayed by operators.
CREATE INDEX outbox_events_dead ON outbox_events (event_type, seq) WHERE status = 'dead';

-- Wakes the relays (LISTEN eventhost_outbox) once per inserting statement, so a batch
-- insert costs one notification; PostgreSQL delivers it at commit and drops it on rollback.
CREATE FUNCTION outbox_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eventhost_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_events_notify
    AFTER INSERT ON outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_notify();
