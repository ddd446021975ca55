"""How the MCP tools turn the server's answers into tool results, and the reads' token; no server needed."""

from __future__ import annotations

from blackboard.integrations.mcp.backend import Answer, Positions
from blackboard.integrations.mcp.server import answer_result, caller_key


def test_an_answer_is_structured_content_and_text() -> None:
    result = answer_result(Answer(200, {"outcome": "accepted", "version": 3}))
    assert not result.is_error and result.structured_content == {"outcome": "accepted", "version": 3}
    assert result.content[0].type == "text" and '"version":3' in result.content[0].text


def test_a_rejection_keeps_the_rules_code_and_details() -> None:
    body = {"outcome": "rejected", "command_id": "c-1", "code": "lease_held", "message": "held by w-2",
            "details": {"holder": "w-2"}}
    result = answer_result(Answer(409, body))
    assert result.is_error and result.structured_content == {"status": 409, **body}
    assert result.content[0].type == "text" and result.content[0].text.startswith("lease_held: held by w-2\n")


def test_a_refusal_keeps_its_code_and_field_errors() -> None:
    errors = [{"path": "$.payload.amount", "message": "Expected `str`"}]
    result = answer_result(Answer(422, {"code": "invalid_command", "message": "bad", "errors": errors}))
    assert result.is_error and result.structured_content == {"code": "invalid_command", "message": "bad",
                                                             "status": 422, "errors": errors}


def test_an_error_without_a_json_body_still_has_a_code() -> None:
    result = answer_result(Answer(502, None))
    assert result.is_error and result.structured_content == {"code": "http_502", "message": "", "status": 502}


def test_the_token_keeps_the_highest_offset_per_partition() -> None:
    positions = Positions()
    assert positions.token() is None
    for position in ("2:10", "0:5", "2:7", "1:3,0:9", "garbage"):
        positions.note(position)
    assert positions.token() == "0:9,1:3,2:10"


class _Request:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def test_the_callers_key_is_read_as_blackboard_reads_it() -> None:
    assert caller_key(None) is None
    assert caller_key(_Request({"authorization": "Bearer k-1"})) == "k-1"
    assert caller_key(_Request({"x-api-key": "k-2"})) == "k-2"
    assert caller_key(_Request({"authorization": "Basic abc"})) is None
