import json
import threading

import pytest

from core.errors import InvalidInput
from training_api.audit import ANONYMOUS, AuditLog, current_actor


def test_entries_are_whole_json_lines_even_from_many_threads(tmp_path):
    log = AuditLog(tmp_path / "sub" / "audit.jsonl")
    threads = [threading.Thread(target=lambda i=i: [
        log.append("promote", f"s{i}", "alice", version=n, note="x" * 500) for n in range(20)])
        for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "sub" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 160
    entries = [json.loads(line) for line in lines]  # every line parses: none interleaved
    assert {e["action"] for e in entries} == {"promote"}
    assert [e["version"] for e in log.entries("s3")] == list(range(20))
    assert all(e["time"] and e["actor"] == "alice" for e in entries)


def _request(principal=None):
    from starlette.requests import Request

    from core.auth import _SCOPE_KEY

    scope = {"type": "http", "headers": []}
    if principal is not None:
        scope[_SCOPE_KEY] = principal
    return Request(scope)


def test_actor_comes_from_the_header_when_auth_is_off():
    anonymous = _request()
    assert current_actor(anonymous, None) == ANONYMOUS
    assert current_actor(anonymous, "  ") == ANONYMOUS
    assert current_actor(anonymous, " alice@plant-3 ") == "alice@plant-3"
    for bad in ("x" * 129, "bob\nmallory", "zoë"):
        with pytest.raises(InvalidInput):
            current_actor(anonymous, bad)


def test_actor_is_the_token_subject_when_auth_is_on():
    from core.tokens import Principal

    signed_in = _request(Principal(subject="carol", roles=frozenset({"ml_engineer"})))
    assert current_actor(signed_in, "mallory") == "carol"  # the header cannot override it
