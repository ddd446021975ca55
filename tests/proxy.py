"""A TCP forwarder on loopback, in front of one of the suite's services: TLS in front of a plaintext broker,
or a port on which a dependency "appears" only when the test starts it."""

from __future__ import annotations

import asyncio
import ssl


class Forwarder:
    """A loopback port (TLS when given a context) whose connections are piped in plain text to ``upstream``."""

    def __init__(self, port: int, upstream: int | str, context: ssl.SSLContext | None = None) -> None:
        """``upstream``: a loopback port, or the path of a Unix socket (the embedded PostgreSQL's)."""
        self.port, self.upstream, self.context = port, upstream, context
        #: Connections accepted (with TLS: whose handshake succeeded).
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            if isinstance(self.upstream, str):
                broker_r, broker_w = await asyncio.open_unix_connection(self.upstream)
            else:
                broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream)
            await asyncio.gather(_pipe(client_r, broker_w), _pipe(broker_r, client_w))
        except OSError:
            pass
        finally:
            client_w.close()
            self._tasks.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        sink.close()
