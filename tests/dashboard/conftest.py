"""A real control plane and inference worker with live traffic, and Debian's chromium under Playwright.

Without /usr/bin/chromium the browser tests are skipped, unless ``BOREALIS_REQUIRE_BROWSER=1`` (CI),
where a missing browser is a failure. Playwright's bundled-browser download is never used.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MODEL = "tiny-llama"
DOMAINS = ("code", "chat", "math")
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("BOREALIS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and BOREALIS_REQUIRE_BROWSER=1 (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser tests skipped")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


class Traffic:
    """Completions labelled with rotating domains, sent continuously; every status code is kept."""

    def __init__(self, base_url: str) -> None:
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base_url,), daemon=True)

    def _run(self, base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for domain in itertools.cycle(DOMAINS):
                if self._stop.is_set():
                    return
                body = {
                    "model": MODEL,
                    "prompt": f"a {domain} question: one two three",
                    "max_tokens": 16,
                    "temperature": 0,
                    "metadata": {"domain": domain},
                }
                self.statuses.append(client.post("/v1/completions", json=body).status_code)
                self._stop.wait(0.05)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    """Control plane + one worker (``w1``) with traffic flowing for the whole module."""
    home = tmp_path_factory.mktemp("dashboard") / "home"
    # Operator actions only: an automatic rollback racing the test's own rollback would make it flaky.
    operator_only = {"BOREALIS_AUTO_ROLLBACK": "false"}
    with Stack(home, redis_url, key_prefix, tiny_model_dir, MODEL, operator_only) as stack:
        traffic = Traffic(stack.base_url)
        try:
            stack.start_worker("w1")
            traffic.start()
            yield stack
        finally:
            traffic.stop()
    assert traffic.statuses and set(traffic.statuses) == {200}, "traffic failed during the dashboard tests"
