"""Property-based fuzz of `ganvas serve` from its own OpenAPI document (schemathesis + hypothesis).

Every operation in /openapi.json gets generated valid (positive) and invalid (negative) requests
against a real server on loopback. Checks: never a 5xx, only documented statuses and content types,
responses match their schemas, invalid data is refused with a 4xx, and the key is really required
where the document declares it. (schemathesis's own pytest plugin does not load under pytest 9, so
the strategies are driven with hypothesis's @given directly.)
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from test_server import KEY, make_plugins  # noqa: E402

from ganvas.core.hosts.server.background import BackgroundServer  # noqa: E402
from ganvas.core.hosts.server.config import ServerConfig  # noqa: E402

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
OPERATIONS = [
    ("POST", "/v1/images/generations"),
    ("POST", "/v1/images/interpolations"),
    ("GET", "/v1/images/files/{filename}"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
    ("GET", "/health"),
]
EXAMPLES = 60


@pytest.fixture(scope="module")
def api_schema(tiny_checkpoint, tmp_path_factory):
    config = ServerConfig(
        port=0,
        api_key=KEY,
        model="tiny",
        workers=2,
        max_queue=64,
        access_log=None,
        store_dir=tmp_path_factory.mktemp("fuzz-store"),
    )
    with BackgroundServer(config, make_plugins(tiny_checkpoint)) as server:
        yield schemathesis.openapi.from_url(server.url + "/openapi.json")


def test_every_operation_is_fuzzed(api_schema):
    documented = {(method.upper(), path) for path, ops in api_schema.raw_schema["paths"].items() for method in ops}
    assert documented == set(OPERATIONS)


# Operations without inputs (GET /v1/models, /health) have nothing to make invalid: positive only.
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST" or "{" in p
]


@pytest.mark.parametrize(
    "method, path, mode", CASES, ids=[f"{m}-{p.strip('/').replace('/', '.')}-{g}" for m, p, g in CASES]
)
def test_operation_never_fails_on_generated_input(api_schema, method, path, mode):
    operation = api_schema[path][method]
    calls = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)
        calls.append(response.status_code)

    run()
    assert calls and all(status < 500 for status in calls)
