"""The HTTP protocol that writes each answer once: the bytes and their order unchanged, nothing held past a turn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from blackboard.http_server import GATHER_BELOW, GatheredWrites, GatheringHttpToolsProtocol


class Recorded(asyncio.Transport):
    """A transport that keeps what reaches it, write by write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_the_writes_of_one_turn_reach_the_socket_as_one() -> None:
    inner = Recorded()
    gathered = GatheredWrites(inner, asyncio.get_running_loop())
    gathered.write(b"HTTP/1.1 200 OK\r\n\r\n")
    gathered.write(memoryview(b"body"))
    assert inner.writes == []
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    gathered.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"next"]
    assert gathered.get_write_buffer_size() == 7  # the rest is the socket's own transport


async def test_a_large_write_is_not_copied_and_keeps_its_place() -> None:
    inner = Recorded()
    gathered = GatheredWrites(inner, asyncio.get_running_loop())
    large = b"x" * GATHER_BELOW
    gathered.write(b"head")
    gathered.write(large)
    gathered.write(b"tail")
    assert inner.writes[0] == b"head" and inner.writes[1] is large
    await asyncio.sleep(0)
    assert inner.writes[2:] == [b"tail"]


async def test_close_writes_what_was_gathered_first_and_a_closed_peer_gets_nothing() -> None:
    inner = Recorded()
    gathered = GatheredWrites(inner, asyncio.get_running_loop())
    gathered.write(b"last words")
    gathered.close()
    assert inner.writes == [b"last words"] and inner.closed
    gathered.write(b"too late")
    await asyncio.sleep(0)
    assert inner.writes == [b"last words"]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/stream``: a head, then a body only once the client has seen the head; anything else: ``hello``."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await scope["state"]["head_seen"].wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    head_seen = asyncio.Event()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"] = {"head_seen": head_seen}
        await app(scope, receive, send)

    served = uvicorn.Server(uvicorn.Config(with_state, http=GatheringHttpToolsProtocol, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(served.serve(sockets=[sock]))
    while not served.started:
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1], head_seen
    served.should_exit = True
    await task
    sock.close()


async def test_a_whole_answer_is_written_in_the_step_that_completes_it() -> None:
    config = uvicorn.Config(app, lifespan="off")
    config.load()
    protocol = GatheringHttpToolsProtocol(config, ServerState(), app_state={})
    inner = Recorded()
    protocol.connection_made(inner)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0)  # the request's task: head and body sent, the answer complete; no turn's end waited for
    assert len(inner.writes) == 1 and inner.writes[0].endswith(b"\r\n\r\nhello")
    protocol.connection_lost(None)


async def test_answers_on_a_kept_alive_connection_are_whole(server: tuple[int, asyncio.Event]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server[0])
    for _ in range(2):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 5\r\n" in head
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
    writer.close()


async def test_a_streamed_head_is_not_held_for_its_body(server: tuple[int, asyncio.Event]) -> None:
    port, head_seen = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # the body waits for this
    assert b"transfer-encoding: chunked" in head
    head_seen.set()
    assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5) == b"4\r\nlate\r\n0\r\n\r\n"
    writer.close()
