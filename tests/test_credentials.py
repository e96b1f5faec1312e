"""Admin credential generation and rotation, and optional inference API keys, against a real control plane."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.procs import cli_argv
from tests.stack import Stack


@pytest.fixture
def stack(tmp_path: Path, tiny_model_dir: Path, redis_url: str, key_prefix: str) -> Iterator[Stack]:
    extra = {"BOREALIS_ADMIN_TOKEN": "", "BOREALIS_REQUIRE_API_KEY": "true"}
    with Stack(tmp_path / "home", redis_url, key_prefix, tiny_model_dir, "tiny-llama", extra) as stack:
        yield stack


def cli(stack: Stack, *args: str) -> str:
    result = subprocess.run(cli_argv(*args), env=stack.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_generated_admin_credential_is_private_and_rotates(stack: Stack) -> None:
    token_file = stack.home / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    old = token_file.read_text().strip()

    def status(token: str) -> int:
        return httpx.get(
            f"{stack.base_url}/api/drafts", headers={"authorization": f"Bearer {token}"}
        ).status_code

    assert status(old) == 200
    cli(stack, "admin", "rotate-token")
    new = token_file.read_text().strip()
    assert new != old and token_file.stat().st_mode & 0o777 == 0o600
    assert status(old) == 403
    assert status(new) == 200
    assert old not in (stack.home / "api.log").read_text()


def test_inference_api_keys_when_required(stack: Stack) -> None:
    key = cli(stack, "apikey", "create", "ci-client")
    assert key.startswith("sk_")
    assert httpx.get(f"{stack.base_url}/v1/models").status_code == 401
    wrong = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="sk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    right = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0)
    assert [m.id for m in right.models.list().data] == ["tiny-llama"]
