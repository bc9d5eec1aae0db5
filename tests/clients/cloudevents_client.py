"""The CloudEvents Python SDK and pika, as the tests' reference publisher and reader.

    publish AMQP_URL EXCHANGE   events from stdin (a JSON list), published in order
    read AMQP_URL QUEUE COUNT   COUNT messages from QUEUE, parsed by the SDK, as JSON lines

Each event to publish is {"mode", "attributes", "data"}; mode is
  structured       the SDK's RabbitMQ binding, structured (application/cloudevents+json)
  binary-rabbitmq  the SDK's RabbitMQ binding, binary (`ce-` headers)
  binary-amqp      the SDK's AMQP binding, binary (`cloudEvents_` application properties,
                   `time` as an AMQP timestamp in milliseconds), sent as headers
  plain            the attributes and data as one JSON body, no SDK (attributes the SDK
                   would add, such as `time`, stay absent)
"""

import json
import sys
import time
from datetime import datetime

import pika
from cloudevents.core.bindings import amqp, rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


def message(spec):
    """(headers, content_type, body) of one event to publish."""
    mode = spec["mode"]
    if mode == "plain":
        body = dict(spec["attributes"], data=spec.get("data"))
        return {}, "application/json", json.dumps(body).encode()
    attributes = dict(spec["attributes"])
    if "time" in attributes:
        attributes["time"] = datetime.fromisoformat(attributes["time"])
    event = CloudEvent(attributes=attributes, data=spec.get("data"))
    if mode == "structured":
        m = rabbitmq.to_structured(event, JSONFormat())
        return m.headers, m.content_type, m.body
    if mode == "binary-rabbitmq":
        m = rabbitmq.to_binary(event, JSONFormat())
        return m.headers, m.content_type, m.body
    if mode == "binary-amqp":
        m = amqp.to_binary(event, JSONFormat())
        return m.application_properties, m.properties.get("content-type"), m.application_data
    raise SystemExit(f"unknown mode {mode!r}")


def publish(url, exchange):
    specs = json.load(sys.stdin)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    for spec in specs:
        headers, content_type, body = message(spec)
        properties = pika.BasicProperties(
            headers=headers, content_type=content_type, delivery_mode=2
        )
        routing_key = spec["attributes"]["type"]
        channel.basic_publish(exchange, routing_key, body, properties, mandatory=False)
    connection.close()


def read(url, queue, count):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    deadline = time.monotonic() + 30
    seen = 0
    while seen < count:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {seen} of {count} messages arrived in {queue}")
            time.sleep(0.1)
            continue
        m = rabbitmq.RabbitMQMessage(
            headers=properties.headers or {},
            content_type=properties.content_type,
            body=body,
        )
        event = rabbitmq.from_rabbitmq(m, JSONFormat())
        attributes = {
            k: (v.isoformat() if hasattr(v, "isoformat") else v)
            for k, v in event.get_attributes().items()
        }
        print(json.dumps({"attributes": attributes, "data": event.get_data()}), flush=True)
        seen += 1
    connection.close()


if __name__ == "__main__":
    command, url, *rest = sys.argv[1:]
    if command == "publish":
        publish(url, rest[0])
    elif command == "read":
        read(url, rest[0], int(rest[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")
