"""Property-based fuzzing of every operation in /openapi.json: no input yields a 5xx.

Bounded so the whole run stays well under a minute on a small CPU machine: few examples
per operation, no deadline, and a server with a short context so no request is long.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402


from live_server import start_server, stop_server  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_server():
    # A 64-token context: any accepted request is short, whatever max_tokens and n it asks.
    live = start_server({"max_model_len": 64})
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_server):
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


def test_no_input_gives_a_server_error(fuzz_schema):
    # The schemathesis pytest plugin breaks with some pytest releases; drive its strategies
    # with hypothesis directly instead.
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert operations

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            case.call_and_validate(checks=[not_a_server_error], timeout=60)

        check()
