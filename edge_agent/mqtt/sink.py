"""What the parts that send need from the publisher: one verb."""

from __future__ import annotations

from typing import Protocol


class MessageSink(Protocol):
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry: float | None = None,
    ) -> int:
        """Send one message; raises PublishError if it cannot even be queued."""
        ...
