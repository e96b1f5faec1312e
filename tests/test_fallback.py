"""A model the lean engine cannot run still serves, says so, and does not send the trainer into a loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import save_tiny_llama
from tests.procs import cli_argv, start, stop, wait_until
from tests.stack import Stack

pytestmark = pytest.mark.slow
MODEL = "tiny-biased-llama"


@pytest.fixture(scope="module")
def biased_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A random Llama with biased attention projections: Hugging Face runs it, the lean engine not."""
    return save_tiny_llama(tmp_path_factory.mktemp("biased-llama"), smollm2_dir, attention_bias=True)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, biased_model_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("fallback-home")
    env = {"BOREALIS_TRAINER_IDLE_SECONDS": "0.5", "BOREALIS_TRAINER_MIN_RECORDS": "1"}
    with Stack(home, redis_url, key_prefix, biased_model_dir, MODEL, env) as stack:
        stack.start_worker("w1")
        yield stack


def test_the_fallback_is_visible_and_serves(stack: Stack) -> None:
    (worker,) = stack.admin("GET", "/api/workers").json()
    assert worker["engine"] == "hf" and "biased projections" in worker["fallback_reason"]
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, "temperature": 0}
    assert httpx.post(f"{stack.base_url}/v1/completions", json=body, timeout=60).status_code == 200


def test_the_trainer_states_it_cannot_train_once_instead_of_failing_every_round(stack: Stack) -> None:
    log = stack.home / "trainer.log"
    trainer = start(cli_argv("worker", "train"), stack.env, log)
    try:
        wait_until(
            lambda: "learning stops on this worker" in log.read_text(),
            120,
            "the trainer's verdict",
            trainer,
            log,
        )
        wait_until(
            lambda: log.read_text().count("'status': 'unsupported'") >= 4, 60, "rounds idling", trainer, log
        )
        text = log.read_text()
        assert text.count("learning stops on this worker") == 1
        assert "training round failed" not in text
        assert trainer.poll() is None
    finally:
        stop(trainer)
