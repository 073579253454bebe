"""An open-loop HTTP/1.1 load generator light enough to share 2 cores with the server.

Request i (precomputed bytes) is due at t0 + i / rate whatever happened to earlier ones; it is
written on an idle keep-alive connection, else on a new one (up to `max_connections`), else it
waits for the first connection to free up. Its latency is counted from its due time, so a
server that falls behind is charged for the queueing (no coordinated omission). Responses are
parsed by hand (status line, Content-Length): no HTTP library on the hot path, uvloop when
installed. A response that is not 200, a dropped connection and a request still unanswered
`timeout` seconds after the last one was due are errors. `record`, when given, is called with
every request's fate: (index, due, settled, status, response bytes), status 0 when the
connection failed or dropped it (times are `time.perf_counter()` seconds).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_HEADER_END = b"\r\n\r\n"

# (index, due, settled, status, response): see the module docstring
Recorder = Callable[[int, float, float, int, bytes], None]


def post_bytes(
    *, host: str, path: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> bytes:
    """One keep-alive POST of a JSON body, ready to write on a socket."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode("ascii")
    return head + payload


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, from the due time
    errors: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    elapsed: float = 0.0
    connections: int = 0
    last_error: str | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, generator: _Generator) -> None:
        self.generator = generator
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.buffer = bytearray()
        self.due: float | None = None  # the request in flight's due time
        self.index = -1  # the request in flight's position in the payloads
        self.expected: int | None = None  # bytes of the whole response once the head is read
        self.status = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.ready.set_result(None)

    def send(self, payload: bytes, due: float, index: int) -> None:
        assert self.transport is not None
        self.due = due
        self.index = index
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.due is not None:
            if self.expected is None:
                end = self.buffer.find(_HEADER_END)
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).split(b"\r\n")
                self.status = int(head[0].split(b" ", 2)[1])
                length = 0
                for line in head[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                        break
                self.expected = end + len(_HEADER_END) + length
            if len(self.buffer) < self.expected:
                return
            response = bytes(self.buffer[: self.expected]) if self.generator.record else b""
            del self.buffer[: self.expected]
            self.expected = None
            due, self.due = self.due, None
            self.generator.finished(self, due, self.status, self.index, response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        due, self.due = self.due, None
        self.generator.lost(self, due, exc, self.index)


class _Generator:
    def __init__(
        self, *, host: str, port: int, max_connections: int, record: Recorder | None
    ) -> None:
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.record = record
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiting: collections.deque[tuple[bytes, float, int]] = collections.deque()
        self.outcome = Outcome()
        self.in_flight = 0
        self.done = asyncio.Event()
        self.sending = True

    def submit(self, payload: bytes, due: float, index: int) -> None:
        self.in_flight += 1
        if self.idle:
            self.idle.pop().send(payload, due, index)
        elif self.open < self.max_connections:
            self.open += 1
            self.outcome.connections += 1
            asyncio.get_running_loop().create_task(self._connect(payload, due, index))
        else:
            self.waiting.append((payload, due, index))

    async def _connect(self, payload: bytes, due: float, index: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError as error:
            self.open -= 1
            if self.record:
                self.record(index, due, time.perf_counter(), 0, b"")
            self._count_error(f"connect: {error}")
            return
        connection.send(payload, due, index)

    def finished(
        self, connection: _Connection, due: float, status: int, index: int, response: bytes
    ) -> None:
        now = time.perf_counter()
        if self.record:
            self.record(index, due, now, status, response)
        self.outcome.statuses[status] += 1
        if status == 200:
            self.outcome.latencies.append(now - due)
        else:
            self._count_error(f"status {status}", settle=False)
        self._settle()
        if self.waiting:
            connection.send(*self.waiting.popleft())
        else:
            self.idle.append(connection)

    def lost(
        self, connection: _Connection, due: float | None, exc: Exception | None, index: int
    ) -> None:
        self.open -= 1
        if connection in self.idle:
            self.idle.remove(connection)
        if due is not None:
            if self.record:
                self.record(index, due, time.perf_counter(), 0, b"")
            self._count_error(f"connection lost: {exc}")
        if self.waiting and self.open < self.max_connections:
            self.in_flight -= 1
            self.submit(*self.waiting.popleft())

    def _count_error(self, reason: str, *, settle: bool = True) -> None:
        self.outcome.errors += 1
        self.outcome.last_error = reason
        if settle:
            self._settle()

    def _settle(self) -> None:
        self.in_flight -= 1
        if not self.sending and self.in_flight == 0:
            self.done.set()


async def _run(
    *,
    host: str,
    port: int,
    payloads: list[bytes],
    rate: float,
    max_connections: int,
    timeout: float,
    record: Recorder | None,
) -> Outcome:
    generator = _Generator(host=host, port=port, max_connections=max_connections, record=record)
    started = time.perf_counter()
    interval = 1.0 / rate
    for index, payload in enumerate(payloads):
        due = started + index * interval
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        elif index % 8 == 0:
            await asyncio.sleep(0)  # behind schedule: still read the responses
        generator.submit(payload, due, index)
    generator.sending = False
    if generator.in_flight:
        try:
            await asyncio.wait_for(generator.done.wait(), timeout)
        except TimeoutError:
            generator.outcome.errors += generator.in_flight
            generator.outcome.last_error = f"{generator.in_flight} unanswered after {timeout} s"
    generator.outcome.elapsed = time.perf_counter() - started
    for connection in generator.idle:
        if connection.transport is not None:
            connection.transport.close()
    return generator.outcome


def drive(
    *,
    host: str,
    port: int,
    payloads: list[bytes],
    rate: float,
    max_connections: int = 512,
    timeout: float = 10.0,
    record: Recorder | None = None,
) -> Outcome:
    """Send `payloads` at `rate` per second (open loop); blocks until every one is settled."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(  # type: ignore[no-any-return]
        _run(
            host=host,
            port=port,
            payloads=payloads,
            rate=rate,
            max_connections=max_connections,
            timeout=timeout,
            record=record,
        )
    )
