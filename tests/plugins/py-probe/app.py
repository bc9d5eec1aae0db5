"""Test plugin in Python: each event type shows one thing the host does for guests of
any language (output kept, exceptions reported, nothing granted)."""

import os
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Event, HandlerError_Permanent


class Handler(exports.Handler):
    def subscriptions(self) -> list[str]:
        return ["probe.#"]

    def handle(self, event: Event) -> None:
        print(f"py-probe handling {event.id}")
        if event.type == "probe.noop":
            return
        if event.type == "probe.raise":
            print("about to fail on purpose", file=sys.stderr)
            raise ValueError(f"deliberate failure for {event.subject}")
        if event.type == "probe.chatty":
            for n in range(3_000):
                print(f"line {n} of a guest that never stops talking", file=sys.stderr)
            return
        if event.type == "probe.world":
            # What the sandbox lets a plugin see, reported as the reason.
            try:
                files = os.listdir("/")
            except OSError as e:
                files = f"refused ({e.__class__.__name__})"
            seen = f"env={dict(os.environ)} argv={sys.argv} files={files}"
            raise Err(HandlerError_Permanent(seen))
        raise Err(HandlerError_Permanent(f"unknown probe {event.type}"))


class Migrations(exports.Migrations):
    def migrations(self) -> list:
        return []
