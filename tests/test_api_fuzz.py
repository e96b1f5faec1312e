"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema: no 5xx, no hang.

Operator endpoints get the admin credential so fuzzing reaches their validation; internal
endpoints get it too, so they must refuse it cleanly (they want the cluster token).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.stack import ADMIN_TOKEN, Stack

pytestmark = pytest.mark.slow
MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def fuzz_stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    limits = {"BOREALIS_MAX_NEW_TOKENS_LIMIT": "8", "BOREALIS_MAX_PROMPT_TOKENS": "128"}
    home = tmp_path_factory.mktemp("fuzz-home")
    with Stack(home, redis_url, key_prefix, tiny_model_dir, MODEL, limits) as stack:
        stack.start_worker("fuzz-worker")
        yield stack


@pytest.fixture(scope="module")
def api_schema(fuzz_stack: Stack) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_stack.base_url}/openapi.json")


def test_no_server_errors(api_schema: Any) -> None:
    """Every operation, 30 generated cases each (schemathesis' pytest plugin predates pytest 9)."""
    checked = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            if isinstance(case.body, dict) and "model" in case.body and case.path.startswith("/v1/"):
                case.body["model"] = MODEL  # reach generation, not only the model-not-found check
            response = case.call(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"

        fuzz()
        checked.append(operation.label)
    assert len(checked) >= 20, checked
