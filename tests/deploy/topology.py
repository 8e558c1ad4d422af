"""The RabbitMQ definitions that core/topology.py declares, recorded from the code itself.

`declare_topology` runs against a fake channel that writes down every exchange, queue and
binding in the RabbitMQ definitions format, so the committed definitions file is checked
against what the processes really declare, not against a second copy of the names.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.topology import declare_topology

VHOST = "/"


class _Queue:
    def __init__(self, recorder: _Recorder, name: str) -> None:
        self.recorder, self.name = recorder, name

    async def bind(self, exchange: _Exchange, routing_key: str) -> None:
        self.recorder.bindings.append(
            {
                "source": exchange.name,
                "vhost": VHOST,
                "destination": self.name,
                "destination_type": "queue",
                "routing_key": routing_key,
                "arguments": {},
            }
        )


class _Exchange:
    def __init__(self, name: str) -> None:
        self.name = name


class _Recorder:
    """Stands for an aio-pika channel: declarations are recorded, nothing is sent."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []
        self.queues: list[dict[str, Any]] = []
        self.bindings: list[dict[str, Any]] = []

    async def declare_exchange(self, name: str, type: Any, durable: bool = False) -> _Exchange:
        self.exchanges.append(
            {
                "name": name,
                "vhost": VHOST,
                "type": getattr(type, "value", type),
                "durable": durable,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
        )
        return _Exchange(name)

    async def declare_queue(
        self, name: str, durable: bool = False, arguments: dict | None = None
    ) -> _Queue:
        self.queues.append(
            {
                "name": name,
                "vhost": VHOST,
                "durable": durable,
                "auto_delete": False,
                "arguments": dict(arguments or {}),
            }
        )
        return _Queue(self, name)


def declared_topology() -> dict[str, list[dict[str, Any]]]:
    """Exchanges, queues and bindings as `declare_topology` declares them."""
    recorder = _Recorder()
    asyncio.run(declare_topology(recorder))  # type: ignore[arg-type]
    return {
        "exchanges": recorder.exchanges,
        "queues": recorder.queues,
        "bindings": recorder.bindings,
    }


def _key(item: dict[str, Any]) -> str:
    return "|".join(str(item.get(k, "")) for k in ("name", "source", "destination", "routing_key"))


def normalized(definitions: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The topology part of a definitions document, in a stable order."""
    return {
        kind: sorted(definitions.get(kind, []), key=_key)
        for kind in ("exchanges", "queues", "bindings")
    }
