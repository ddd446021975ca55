"""The Blackboard server the MCP tools act on, over its HTTP API.

Validation, authorisation, rate limits and every rule stay the server's: a tool call becomes one HTTP
request, and the server's answer (or its refusal, with its code) becomes the tool's result. Reads wait
for the commands this process sent (the ``Blackboard-Consistency`` token of their positions), so an
agent reads its own writes.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import stamina

CONSISTENCY = "Blackboard-Consistency"
#: Attempts of one request on a connection error: a command keeps its ``command_id`` across them, so the
#: server applies it once however many reach it.
ATTEMPTS = 4

#: The API key of the MCP client being answered, when its transport carried one (streamable HTTP): the
#: request goes with it instead of the MCP server's own, so each client acts as itself.
CALLER_KEY: ContextVar[str | None] = ContextVar("blackboard_mcp_caller_key", default=None)


@dataclass(frozen=True)
class Answer:
    """The server's HTTP status and its JSON answer (an error without a JSON body gets one made)."""

    status: int
    body: Any


@dataclass
class Positions:
    """The highest position per partition of every command this process had accepted: its reads' token."""

    offsets: dict[int, int] = field(default_factory=dict)

    def note(self, position: str) -> None:
        for part in position.split(","):
            p, _, o = part.partition(":")
            if p.isdigit() and o.isdigit():
                self.offsets[int(p)] = max(self.offsets.get(int(p), -1), int(o))

    def token(self) -> str | None:
        return ",".join(f"{p}:{o}" for p, o in sorted(self.offsets.items())) or None


class Backend:
    """One Blackboard server at ``url``, called with ``api_key`` (if any). ``agent`` (``run_id``, ``model``,
    ``prompt_hash``) is stamped on every command that does not name its own, so the runs read model and
    their rollback see what this agent did."""

    def __init__(self, url: str, *, api_key: str | None = None, agent: dict[str, str] | None = None,
                 timeout: float = 30.0, http: httpx.AsyncClient | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http or httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.agent = agent or None
        self.positions = Positions()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def command(self, type_: str, arguments: dict[str, Any]) -> Answer:
        """``POST /v1/commands`` with ``arguments`` (stream, payload, dry_run, …) as a command of ``type_``."""
        body = {"type": type_, **{k: v for k, v in arguments.items() if v is not None}}
        body.setdefault("command_id", uuid.uuid4().hex)
        if self.agent is not None:
            body.setdefault("agent", self.agent)
        answer = await self.request("POST", "/v1/commands", body=body)
        if answer.status == 200 and isinstance(answer.body, dict) and answer.body.get("outcome") == "accepted":
            self.positions.note(answer.body["position"])
        return answer

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: dict[str, Any] | None = None) -> Answer:
        """One request; a read carries the consistency token. Raises ``httpx.TransportError`` when the server
        did not answer after ``ATTEMPTS``."""
        token, caller = self.positions.token(), CALLER_KEY.get()
        headers = {CONSISTENCY: token} if token and method == "GET" else {}
        if caller:
            headers["Authorization"] = f"Bearer {caller}"
        async for attempt in stamina.retry_context(on=httpx.TransportError, attempts=ATTEMPTS, timeout=15.0,
                                                   wait_initial=0.05, wait_max=2.0):
            with attempt:
                response = await self.http.request(method, path, params=params, json=body, headers=headers)
        return _answer(response)

    def note_positions(self, doc: Any) -> None:
        """Remember the positions of the commands a rollback applied: later reads see them."""
        for command in doc.get("commands", []) if isinstance(doc, dict) else []:
            if isinstance(command, dict) and isinstance(command.get("position"), str):
                self.positions.note(command["position"])


def _answer(response: httpx.Response) -> Answer:
    try:
        body = msgspec.json.decode(response.content) if response.content else None
    except msgspec.DecodeError:
        body = {"code": f"http_{response.status_code}", "message": response.text[:500]}
    return Answer(response.status_code, body)
