"""A loopback TCP proxy that can lose a command's answer or cut the open connections, for the client's tests."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``.

    ``drop_answers``: that many ``POST /v1/commands`` reach the server, whose answers are then thrown away
    and the client's connection reset (the command applied, the client told nothing). ``cut()`` resets
    every open connection (a server going away under a long-lived stream).
    """

    def __init__(self, upstream: int, *, drop_answers: int = 0) -> None:
        self.upstream, self.drop_answers, self.dropped = upstream, drop_answers, 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        self.cut()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            _reset(writer)
            self._handlers.discard(task)
            return
        self._open.add(writer)
        try:
            await self._pipe(reader, writer, up_reader, up_writer)
        finally:
            _reset(up_writer)
            _reset(writer)
            self._open.discard(writer)
            self._handlers.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        swallow = asyncio.Event()

        async def to_server() -> None:
            while data := await reader.read(65536):
                if self.drop_answers and data.startswith(b"POST /v1/commands"):
                    self.drop_answers -= 1
                    swallow.set()
                up_writer.write(data)
                await up_writer.drain()

        async def to_client() -> None:
            while data := await up_reader.read(65536):
                if swallow.is_set():
                    self.dropped += 1
                    _reset(writer)
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        with contextlib.suppress(Exception):
            await asyncio.gather(to_server(), to_client())


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection at once (a reset, not a polite end)."""
    writer.transport.abort()
    writer.close()
