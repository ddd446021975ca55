"""uvicorn's HTTP/1.1 protocol with one socket write per answer instead of two.

uvicorn writes an answer's status line and headers when the app sends ``http.response.start``, and its
body when the app sends ``http.response.body``: two ``send`` calls, two TCP segments, and on loopback
the kernel's delivery of each to the peer counted in this process. This protocol gathers what a
connection writes and hands it to the socket once: as soon as the answer is complete (in the same step of
the request's task, so no answer waits), or, for an answer still streaming (server-sent events), at the
end of the event loop's turn in which it was written.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Writes this large go to the socket at once (after what was gathered before them): joining them to a head
#: would copy them to save a send that is small beside them.
GATHER_BELOW = 64 * 1024


class GatheredWrites:
    """A transport whose writes in one turn of the loop reach the socket as one write.

    Everything else (flow control, peer address, closing) is the wrapped transport's; ``close`` and
    ``write_eof`` write what is gathered first, so the order of the bytes never changes.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) >= GATHER_BELOW:  # a large body is not copied to save one send: what is gathered goes first
            self.flush()
            if not self._transport.is_closing():
                self._transport.write(data)
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data if isinstance(data, bytes) else bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Write what was gathered (nothing once the transport is closing: the peer is gone)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose answers are written through ``GatheredWrites``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Flow control keeps the socket's own transport (its pause and resume); the answers go through the gatherer.
        self.transport = GatheredWrites(transport, self.loop)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        # The answer is whole: to the socket now, not at the end of the turn (which other work may make long).
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
