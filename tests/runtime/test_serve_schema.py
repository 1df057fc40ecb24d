"""schemathesis against the real server's own OpenAPI: thousands of valid and invalid
requests, and not one 5xx (issue #10). Valid bodies follow the schema the server
publishes for its model's inputs (exact shapes, numbers its dtype holds); invalid ones
break it on purpose."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from .test_serve import Server

CASES_PER_MODE = 1250  # per artifact: 2 artifacts x 2 modes x 1250 on /v1/predict = 5,000


@pytest.mark.slow  # fuzzes a live server with every request its schema allows
@pytest.mark.parametrize("artifact", ["onnx-fp32", "tflite-int8"])
def test_no_request_the_schema_allows_or_breaks_gets_a_5xx(digits_bundle, tmp_path, artifact):
    server = Server(digits_bundle, tmp_path, "--artifact", artifact)
    url = f"http://127.0.0.1:{server.port}"
    statuses: dict[tuple[str, str, int], int] = {}
    try:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} == {"GET /healthz", "GET /v1/model", "GET /metrics", "POST /v1/predict"}
        for op in operations:
            # GETs take no parameters: one valid case each, nothing to break.
            modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if op.method.upper() == "POST" else [])
            for mode in modes:
                _fuzz(op, mode, url, statuses)
    finally:
        server.stop()
    predicted = sum(n for (label, _, _), n in statuses.items() if label == "POST /v1/predict")
    assert predicted >= 2 * CASES_PER_MODE * 0.95, statuses  # hypothesis ran (nearly) every case
    assert statuses.get(("POST /v1/predict", "positive", 200), 0) > 0, statuses  # valid bodies were answered
    refused = sum(n for (_, mode, status), n in statuses.items() if mode == "negative" and status == 422)
    assert refused > CASES_PER_MODE / 2, statuses  # broken bodies get the one clear 422


def _fuzz(op, mode, url: str, statuses: dict[tuple[str, str, int], int]) -> None:
    """Send CASES_PER_MODE requests of one operation in one mode, counting statuses; none may be a 5xx."""
    @settings(max_examples=CASES_PER_MODE, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def call(case):
        response = case.call(base_url=url)
        key = (op.label, mode.value, response.status_code)
        statuses[key] = statuses.get(key, 0) + 1
        assert response.status_code < 500, f"{op.label} {mode.value}: {response.status_code} {response.text[:300]}"

    call()


def test_the_schema_of_each_input_follows_its_dtype():
    from edgepack_runtime.manifest import TensorSpec
    from edgepack_runtime.serve import _tensor_schema

    mask = _tensor_schema(TensorSpec(name="mask", shape=(1, 2), dtype="bool"))
    assert mask == {"type": "array", "minItems": 1, "maxItems": 1,
                    "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "boolean"}}}
    ids = _tensor_schema(TensorSpec(name="ids", shape=(3,), dtype="int32"))["items"]
    assert ids == {"type": "integer", "minimum": -2**31, "maximum": 2**31 - 1}
