"""What `tanp-serve` adds to uvicorn so that neither slow clients nor a dead parent need hands:
`TimedHttpProtocol` (deadlines for a request's headers and body), `die_with_parent` (a worker
gets SIGTERM when its supervisor dies) and `wait_for_port` (a restart waits for a port still
held). Knows nothing about the model, SQL or Redis.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import signal
import socket
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings

logger = logging.getLogger(__name__)

SUPERVISOR_PID_ENV = "TANP_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _limits() -> tuple[float, float, int]:
    """(header timeout, body timeout, MAX_HEADER_BYTES) of this process, read once from the
    environment."""
    settings = Settings()
    return (
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
        settings.max_header_bytes,
    )


_HEAD_END = b"\r\n\r\n"


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request line and headers
    (HEADER_TIMEOUT_SECONDS, from the connection's start or the end of the previous response)
    and one for the body (BODY_TIMEOUT_SECONDS, from the end of the headers): past either the
    connection is closed, with a 408 when part of a request had arrived. uvicorn's own
    keep-alive timeout (KEEP_ALIVE_SECONDS) closes idle connections between requests.
    A request line and headers of more than MAX_HEADER_BYTES get 431 and the connection is
    closed before they are parsed (httptools would buffer a header of any size)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.body_timeout, self.max_header_bytes = _limits()
        self._deadline: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of a request arrived since the last response
        self._in_head = True  # reading a request line and headers
        self._head_bytes = 0  # bytes of them so far
        self._head_tail = b""  # the last 3 bytes, for a blank line split across reads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: the rest of the request is never parsed
        self._partial = True
        if self._in_head and self._head_too_large(data):
            self._refuse(
                b"431 Request Header Fields Too Large",
                f"request line and headers over {self.max_header_bytes} bytes",
            )
            return
        super().data_received(data)

    def _head_too_large(self, data: bytes) -> bool:
        room = self.max_header_bytes - self._head_bytes
        end = (self._head_tail + data).find(_HEAD_END)
        if end >= 0:  # the head ends in this read: its bytes up to the blank line count
            return end + len(_HEAD_END) - len(self._head_tail) > room
        self._head_bytes += len(data)
        self._head_tail = (self._head_tail + data)[-3:]
        return self._head_bytes > self.max_header_bytes

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        self._disarm()
        if not self.pipeline:  # a pipelined request's body waits for the previous response
            self._arm(self.body_timeout, "body")

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes, self._head_tail = True, 0, b""
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._partial = False
        if not self.transport.is_closing():
            self._arm(self.header_timeout, "headers")

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, what: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        answered = self.cycle is not None and self.cycle.response_started and what == "body"
        if self._partial and not answered:
            self._refuse(
                b"408 Request Timeout", f"request {what} not received within {seconds:g} s"
            )
            return
        self.transport.close()

    def _refuse(self, status: bytes, detail: str) -> None:
        """Answer `status` with a JSON detail and close the connection."""
        self._disarm()
        body = ('{"detail": "' + detail + '"}').encode("ascii")
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: "
            + str(len(body)).encode("ascii")
            + b"\r\n\r\n"
            + body
        )
        logger.info("closed a connection: %s", detail)
        self.transport.close()


def die_with_parent() -> None:
    """In a worker of `tanp-serve --workers N` (the supervisor's pid in TANP_SUPERVISOR_PID):
    ask Linux for SIGTERM when the supervisor dies, and stop now if it already has. Elsewhere
    (one process, or no prctl) nothing."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor or not supervisor.isdigit():
        return
    library = ctypes.util.find_library("c")
    if library is None:
        return
    libc = ctypes.CDLL(library, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return
    if os.getppid() != int(supervisor):  # the parent died before the request above
        logger.error("the supervising process %s is gone: stopping this worker", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)


def wait_for_port(host: str, port: int, *, seconds: float) -> bool:
    """Wait up to `seconds` until `host:port` can be bound (a previous server's workers may
    still be draining); True when it can. uvicorn binds it for real right after."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + seconds
    warned = False
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return True
            except OSError as error:
                if error.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    return False
        if not warned:
            logger.warning("port %d is in use; waiting up to %.0f s for it", port, seconds)
            warned = True
        time.sleep(0.2)
