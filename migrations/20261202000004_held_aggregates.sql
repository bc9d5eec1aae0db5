-- With consumer.on_dead_letter = "hold": per plugin, the aggregates whose events wait
-- behind a dead letter (the head). The row goes when the head is handled (after a replay)
-- or an operator releases it (`eventhost dlq release`).
CREATE TABLE eventhost_held_aggregates (
    plugin text NOT NULL,
    aggregate text NOT NULL,
    head_event_id uuid NOT NULL,
    reason text NOT NULL,
    held_since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin, aggregate)
);
