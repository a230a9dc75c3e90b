"""A minimal MQTT 5 client on asyncio, for simulating thousands of devices in one
process (one paho client and thread per device would not fit on a laptop).

It speaks just what the device contract uses: CONNECT with a last will (and its
Will Delay Interval) and a Session Expiry Interval, PUBLISH at QoS 0/1 both
ways, SUBSCRIBE, PINGREQ, DISCONNECT. QoS 1 messages are not re-sent after a
reconnect (the simulated devices re-publish their retained topics anyway).
Not for production: the agent itself uses paho.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP, DISCONNECT = 2, 3, 4, 9, 13, 14
SESSION_EXPIRY, WILL_DELAY = 0x11, 0x18


class WireError(Exception):
    """The broker refused, closed or sent what this client does not understand."""


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    delay: int = 0  # seconds (MQTT 5 Will Delay Interval)
    qos: int = 1
    retain: bool = True


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + varint(len(body)) + body


def connect_packet(
    client_id: str, keepalive: int, will: Will | None, session_expiry: int, clean: bool
) -> bytes:
    flags = 0x02 if clean else 0
    properties = bytes([SESSION_EXPIRY]) + struct.pack("!I", session_expiry)
    body = b"\x00\x04MQTT\x05"
    payload = text(client_id)
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        will_props = bytes([WILL_DELAY]) + struct.pack("!I", will.delay) if will.delay else b""
        payload += varint(len(will_props)) + will_props + text(will.topic) + text(will.payload)
    body += bytes([flags]) + struct.pack("!H", keepalive) + varint(len(properties)) + properties
    return packet(1, 0, body + payload)


MessageHandler = Callable[[str, bytes], None]


class WireClient:
    """One connection. `connect()` returns after a successful CONNACK; `closed` is
    set when the connection ends for any reason."""

    def __init__(self, client_id: str, on_message: MessageHandler | None = None) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self.bytes_out = 0
        self.bytes_in = 0
        self.closed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._next_id = 0

    async def connect(
        self,
        host: str,
        port: int,
        *,
        keepalive: int = 60,
        will: Will | None = None,
        session_expiry: int = 0,
        clean: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.closed.clear()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        self._reader, self._writer = reader, writer
        self._send(connect_packet(self.client_id, keepalive, will, session_expiry, clean))
        kind, _, body = await asyncio.wait_for(self._read(), timeout)
        if kind != CONNACK or len(body) < 2 or body[1] != 0:
            self.abort()
            raise WireError(f"{self.client_id}: connection refused ({body[1:2].hex() or kind})")

    async def run(self) -> None:
        """Read until the connection ends; acknowledges QoS 1 messages."""
        try:
            while True:
                kind, flags, body = await self._read()
                if kind == PUBLISH:
                    self._incoming(flags, body)
                elif kind == DISCONNECT:
                    return
        except (OSError, asyncio.IncompleteReadError, WireError):
            return
        finally:
            self.abort()

    def _incoming(self, flags: int, body: bytes) -> None:
        qos = flags >> 1 & 3
        (length,) = struct.unpack_from("!H", body)
        topic, at = body[2 : 2 + length].decode(), 2 + length
        if qos:
            self._send(packet(PUBACK, 0, body[at : at + 2]))
            at += 2
        at += self._skip_properties(body, at)
        if self.on_message is not None:
            self.on_message(topic, body[at:])

    @staticmethod
    def _skip_properties(body: bytes, at: int) -> int:
        length, shift, used = 0, 0, 0
        while True:
            byte = body[at + used]
            used += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return used + length

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        body = text(topic)
        if qos:
            body += struct.pack("!H", self._packet_id())
        self._send(packet(PUBLISH, qos << 1 | int(retain), body + b"\x00" + payload))
        return len(topic) + len(payload)

    def subscribe(self, *filters: str, qos: int = 1) -> None:
        body = struct.pack("!H", self._packet_id()) + b"\x00"
        body += b"".join(text(f) + bytes([qos]) for f in filters)
        self._send(packet(8, 2, body))

    def ping(self) -> None:
        self._send(b"\xc0\x00")

    def disconnect(self) -> None:
        """A clean goodbye: the broker discards the will."""
        self._send(b"\xe0\x00")
        self.abort()

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT: the broker keeps the will."""
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None
        self.closed.set()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self.closed.is_set()

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _send(self, data: bytes) -> None:
        if self._writer is None or self._writer.transport.is_closing():
            return  # gone: a simulated device does not queue
        self._writer.write(data)
        self.bytes_out += len(data)

    async def _read(self) -> tuple[int, int, bytes]:
        reader = self._reader
        if reader is None:
            raise WireError("not connected")
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        for _ in range(4):
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = await reader.readexactly(length)
        self.bytes_in += 2 + length
        return first >> 4, first & 0x0F, body
