-- The topic patterns each plugin queue was last bound with, so the consumer can remove the
-- bindings of subscriptions a new plugin version dropped (RabbitMQ's AMQP API cannot list
-- a queue's bindings).
CREATE TABLE eventhost_queue_bindings (
    queue      text NOT NULL,
    exchange   text NOT NULL,
    pattern    text NOT NULL,
    bound_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, exchange, pattern)
);
