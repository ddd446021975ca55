"""The lean load generator's requests and figures: a credential when the load has one, latencies by status."""

from __future__ import annotations

import random

from benchmarks.lean_http import Load, Result, request_bytes


def test_a_load_with_a_key_presents_it_as_a_bearer_credential_and_one_without_presents_none() -> None:
    keyed = Load("127.0.0.1", 8000, "get_project", ["p-1"], 1, key="secret")
    for kind in ("get_project", "add_cost"):
        sent = request_bytes(Load("127.0.0.1", 8000, kind, ["p-1"], 1, key="secret"), random.Random())
        head = sent.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        assert b"Authorization: Bearer secret" in head[1:]
    assert b"Authorization" not in request_bytes(Load("127.0.0.1", 8000, "get_project", ["p-1"], 1),
                                                 random.Random())
    assert request_bytes(keyed, random.Random()).startswith(b"GET /v1/projects/p-1 HTTP/1.1\r\n")


def test_percentiles_of_one_status_leave_the_others_out() -> None:
    result = Result([0.001, 0.5, 0.002, 0.6], {200: 2, 429: 2}, 1.0, 0.0, [429, 200, 429, 200])
    assert result.percentile(0.99, 429) == 0.002 and result.percentile(0.0, 200) == 0.5
    assert result.percentile(0.99) == 0.6
    assert result.percentile(0.5, 503) != result.percentile(0.5, 503)  # NaN: no answer of that status
