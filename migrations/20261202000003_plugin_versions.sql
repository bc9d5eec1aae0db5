-- The versions of each plugin that hosts have deployed, and when (the newest file time any
-- host reported), so hosts running different versions during a rolling upgrade agree on
-- the queue's bindings: the newest version's subscriptions win.
CREATE TABLE eventhost_plugin_versions (
    queue         text NOT NULL,
    exchange      text NOT NULL,
    digest        text NOT NULL,
    deployed_at   timestamptz NOT NULL,
    subscriptions text[] NOT NULL,
    PRIMARY KEY (queue, exchange, digest)
);
