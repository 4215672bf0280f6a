"""What one HTTP connection may hold of the API server: its request head's size and time, its
body's time, and (with all the others) how many connections may be open at once.

uvicorn's httptools protocol bounds none of these. httptools buffers a header until its line
ends, growing it by concatenation, so a 64 MB header was held whole and stalled the event loop
for seconds; and a client that trickles a byte now and then holds its connection, and a file
descriptor, for ever. The subclass here:

- counts a request head's bytes as they arrive and stops feeding the parser at the limit, so
  the parser never holds more than about the limit, however long the header is;
- keeps one deadline per connection, for the phase it is in: its head (from the connection's
  opening, or from the first byte of the next request on a keep-alive connection), then its
  body. A request whose head and body arrive in one read, as small predicts do, arms none;
- turns away a connection beyond the cap at once, so descriptors stay for real work.

A refused connection is answered where the client can still tell what the answer is for, then
lingers: its input is read and dropped for a short while, so the answer reaches a client still
sending instead of being lost to the TCP reset that closing on unread input causes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import Settings
from service.errors import HeadersTooLarge, Overloaded, RequestTimeout

log = logging.getLogger("service.api.connections")

# A refused connection's input is read and dropped for at most this long and this many bytes
# before it is closed: long enough for a client to finish a request it was sending and read
# the answer, short enough that refusals free their descriptors within seconds.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1024 * 1024
# Refusals are logged as counts at most this often: a flood of hostile connections must not
# become a flood of log lines.
LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    keep_alive_seconds: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int) -> ConnectionLimits:
        """The settings' limits, with the connection cap that fits the open-file limit."""
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            keep_alive_seconds=settings.keep_alive_seconds,
            max_connections=max_connections,
        )


class Phase(enum.Enum):
    IDLE = "waiting for a request's first byte"
    HEAD = "reading a request line and headers"
    BODY = "reading a request body"
    LINGER = "refused: reading and dropping input until the connection closes"


# The members by bare name: each Phase.X costs a lookup of some 50 ns in Python 3.11, and every
# request passes several of them.
IDLE, HEAD, BODY, LINGER = Phase.IDLE, Phase.HEAD, Phase.BODY, Phase.LINGER


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop the parser at a head over the limit."""


class RefusalLog:
    """Counts refusals by reason and logs them together, at most once per LOG_EVERY_SECONDS."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._logged_at = float("-inf")

    def note(self, reason: str, now: float) -> None:
        self._counts[reason] += 1
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            summary = ", ".join(f"{count} {why}" for why, count in self._counts.items())
            log.warning("connections refused: %s", summary)
            self._counts.clear()
            self._logged_at = now


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; `bounded_protocol` binds them."""

    limits: ClassVar[ConnectionLimits]
    refusals: ClassVar[RefusalLog]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn types its keep-alive as whole seconds, but only hands it to call_later,
        # which takes any float: keep the exact setting (tests use fractions of a second).
        self.timeout_keep_alive = self.limits.keep_alive_seconds  # type: ignore[assignment]
        self._phase = IDLE
        self._head_room = self.limits.max_header_bytes
        # A head that begins inside a read that started in another phase (HTTP pipelining)
        # was not counted as it arrived; its size is checked once it is parsed instead.
        self._head_uncounted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._linger_left = 0

    # -- connection --

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._turn_away()
            return
        self._deadline = self.loop.call_later(
            self.limits.header_timeout_seconds, self._head_overdue
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase is LINGER:
            self._discard(len(data))
            return
        if phase is BODY:
            self._feed(data)
        elif len(data) <= self._head_room:  # the common case: a head well within the limit
            self._phase = HEAD
            self._head_room -= len(data)
            self._feed(data)
        else:
            self._feed_past_room(data)
        if self._deadline is None and self._phase is not IDLE:
            self._arm_deadline()

    def _feed_past_room(self, data: bytes) -> None:
        """Bytes that start in a request head and run past its room: fed up to the room, and
        further only if a head ended within it."""
        self._phase = HEAD
        while len(data) > self._head_room:
            room, self._head_room = self._head_room, 0
            self._feed(data[:room])
            data = data[room:]
            if self._phase is LINGER:
                self._discard(len(data))
                return
            if self.transport.is_closing():
                return
            if self._phase is BODY:
                self._feed(data)
                return
            if self._head_room == 0:
                # No request ended within the room (that would have renewed it): this head
                # is over the limit, and the rest of it is never parsed.
                self._refuse_head_too_large()
                self._discard(len(data))
                return
            if data:
                # A request ended; the rest begins the next one's head.
                self._phase = HEAD
        self._head_room -= len(data)
        self._feed(data)

    def _arm_deadline(self) -> None:
        if self._phase is HEAD:
            self._deadline = self.loop.call_later(
                self.limits.header_timeout_seconds, self._head_overdue
            )
        elif self._phase is BODY:
            self._deadline = self.loop.call_later(
                self.limits.body_timeout_seconds, self._body_overdue
            )

    def _feed(self, data: bytes) -> None:
        """uvicorn's data_received, but refusing a head the parser found too large."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, HeadTooLarge):
                self._refuse_head_too_large()
            else:
                self._refuse_malformed()
        except httptools.HttpParserError:
            self._refuse_malformed()
        except httptools.HttpParserUpgrade:
            # Served as plain HTTP (uvicorn.Config(ws="none")): the API has no WebSockets, and
            # an upgraded connection would leave these bounds. uvicorn would also log two
            # warnings per such request, which any client could use to flood the log.
            pass

    # -- parser callbacks --

    def on_message_begin(self) -> None:
        self._head_uncounted = self._phase is not HEAD
        self._phase = HEAD
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._deadline is not None:
            self._cancel_deadline()
        if self._head_uncounted and self._parsed_head_bytes() > self.limits.max_header_bytes:
            raise HeadTooLarge
        self._phase = BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._deadline is not None:
            self._cancel_deadline()
        self._phase = IDLE
        self._head_room = self.limits.max_header_bytes
        super().on_message_complete()

    def _parsed_head_bytes(self) -> int:
        """The size of the head just parsed, as it was sent."""
        method = self.parser.get_method()
        request_line = len(method) + len(b" ") + len(self.url) + len(b" HTTP/1.1\r\n")
        header_lines = sum(len(name) + len(value) + len(b": \r\n") for name, value in self.headers)
        return request_line + header_lines + len(b"\r\n")

    # -- deadlines --

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_overdue(self) -> None:
        self._deadline = None
        limit = self.limits.header_timeout_seconds
        self.refusals.note("head timeouts", self.loop.time())
        answer = self._answer(
            HTTPStatus.REQUEST_TIMEOUT,
            RequestTimeout.kind,
            f"the request line and headers did not arrive within {limit:g} s",
        )
        # A connection that never sent a byte has nothing in flight to wait for.
        self._refuse(answer, linger=self._phase is not IDLE)

    def _body_overdue(self) -> None:
        self._deadline = None
        limit = self.limits.body_timeout_seconds
        self.refusals.note("body timeouts", self.loop.time())
        answer = self._answer(
            HTTPStatus.REQUEST_TIMEOUT,
            RequestTimeout.kind,
            f"the request body did not arrive within {limit:g} s of its headers",
        )
        self._refuse(answer)

    # -- refusals --

    def _refuse_head_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self.refusals.note("heads too large", self.loop.time())
        answer = self._answer(
            HTTPStatus(HeadersTooLarge.status_code),
            HeadersTooLarge.kind,
            f"the request line and headers are larger than the limit of {limit} bytes",
        )
        self._refuse(answer)

    def _refuse_malformed(self) -> None:
        # As uvicorn answers a request the parser rejects.
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def _turn_away(self) -> None:
        """A connection beyond the cap: a short 503 and close, holding no slot meanwhile."""
        self.connections.discard(self)
        limit = self.limits.max_connections
        self.refusals.note("connections over the cap", self.loop.time())
        answer = self._answer(
            HTTPStatus(Overloaded.status_code),
            Overloaded.kind,
            f"the server has its limit of {limit} connections open; retry shortly",
            retry_after=True,
        )
        self._refuse(answer, linger=False)

    def _refuse(self, answer: bytes, *, linger: bool = True) -> None:
        """Send `answer` where the client can still tell which request it answers, stop
        reading requests, and close: at once, or after lingering."""
        if self.transport.is_closing():
            return  # closed meanwhile (by the app, or a parse error): nothing left to bound
        self._cancel_deadline()
        self._unset_keepalive_if_required()
        refused_in, self._phase = self._phase, LINGER
        cycle = self.cycle
        if refused_in is BODY:
            # The request being read is this cycle's: it may have been answered already
            # (say, a 413 before its body), and a second answer would be taken for the next.
            if cycle is not None and cycle.response_started:
                answer = b""
        elif cycle is not None and not cycle.response_complete:
            # A head refused while an earlier pipelined request is being answered: an answer
            # now would be taken for that one. Pipelining a bad head abandons those before it.
            answer = b""
        if cycle is not None and not cycle.response_complete:
            # The app may be waiting in receive(): it gets http.disconnect rather than
            # hanging, and what it still sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        if answer:
            self.transport.write(answer)
        if not linger:
            self.transport.close()
            return
        self._linger_left = LINGER_MAX_BYTES
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            # The client reads the answer, then the end; its own close ends the linger.
            self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _discard(self, size: int) -> None:
        self._linger_left -= size
        if self._linger_left < 0:
            self.transport.close()

    def _answer(
        self, status: HTTPStatus, kind: str, detail: str, *, retry_after: bool = False
    ) -> bytes:
        """A complete response that closes the connection, with the API's error body."""
        body = orjson.dumps({"error": kind, "detail": detail})
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("ascii")]
        # Server and Date, as uvicorn sends them on every response.
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        return b"".join([*head, b"\r\n", body])


def bounded_protocol(limits: ConnectionLimits) -> type[BoundedHttpProtocol]:
    """The protocol class for uvicorn.Config(http=...): uvicorn makes one per connection."""
    bound = limits

    class Bounded(BoundedHttpProtocol):
        limits = bound
        refusals = RefusalLog()

    return Bounded
