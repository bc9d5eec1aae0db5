-- Redelivered messages whose handling has started and not settled, per plugin: a row
-- still here when the message comes back means the host stopped while handling it.
CREATE TABLE eventhost_inflight (
    plugin text NOT NULL,
    event_id uuid NOT NULL,
    starts integer NOT NULL DEFAULT 0,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin, event_id)
);
