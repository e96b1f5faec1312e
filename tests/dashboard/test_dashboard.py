"""The operator dashboard in a real browser against a real control plane, worker, Redis and traffic."""

from __future__ import annotations

import os
import re
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from borealis.control_client import ControlPlaneClient
from tests.dashboard.conftest import VIEWPORT
from tests.drafts import make_draft_artifact
from tests.procs import wait_until
from tests.stack import ADMIN_TOKEN, CLUSTER_TOKEN, Stack

pytestmark = pytest.mark.slow
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TIMEOUT_MS = 30_000
UPDATE_SCREENSHOTS = os.environ.get("BOREALIS_UPDATE_SCREENSHOTS") == "1"


def worker_version(stack: Stack) -> str | None:
    workers = {w["id"]: w for w in stack.admin("GET", "/api/workers").json()}
    version: str | None = workers["w1"]["draft_version"]
    return version


def audit(stack: Stack, action: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = stack.admin("GET", f"/api/audit?action={action}").json()
    return entries


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


class Dashboard:
    """A signed-in browser page; fails the test on any script error or CSP violation."""

    def __init__(self, browser: Any, base_url: str, shots: Path, api_log: Path) -> None:
        self.base_url = base_url
        self.shots = shots
        self.api_log = api_log
        self.context = browser.new_context(viewport=VIEWPORT, base_url=base_url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        # A refused or missing API call is logged by Chrome as "Failed to load resource"; the
        # tests provoke those on purpose (wrong credential, optional endpoints). Anything else counts.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def sign_in(self, token: str) -> None:
        self.page.goto("/dashboard")
        self.page.wait_for_url("**/dashboard/login?next=/dashboard")
        # The credential field takes focus on load (autofocus), which Chromium applies at a rendering
        # update that may come after the load event: typing before it loses the keys.
        self.page.wait_for_function("document.activeElement && document.activeElement.id === 'token'")
        self.page.keyboard.type(token)
        self.page.keyboard.press("Enter")

    def open(self, name: str) -> None:
        self.page.goto("/dashboard" if name == "overview" else f"/dashboard/{name}")
        try:
            self.page.wait_for_selector("#updated:has-text('updated')")
        except PlaywrightTimeout:
            # What the page said and what the control plane was doing: a slow first refresh is
            # otherwise a bare timeout with nothing to go on.
            shown = self.page.locator("#updated").text_content()
            log = self.api_log.read_text()[-4000:] if self.api_log.exists() else ""
            raise AssertionError(f"{name}: first refresh not done; #updated={shown!r}\n{log}") from None

    def points(self, figure: str) -> int:
        return int(self.page.locator(f"#{figure}").get_attribute("data-points") or 0)

    def wait_points(self, figure: str) -> None:
        # Selectors, not wait_for_function: the page's CSP forbids the eval that would need.
        self.page.wait_for_selector(f"#{figure}[data-points]:not([data-points='0']) .main-svg")

    def confirm(self, button: str, reason: str) -> None:
        """Click an action, give the reason in the confirmation dialog, confirm."""
        self.page.locator(button).click()
        self.page.locator("#confirm-reason").fill(reason)
        self.page.locator("#confirm-ok").click()
        self.page.wait_for_selector("#status:not(:empty)")
        outcome = self.page.locator("#status").text_content() or ""
        assert outcome.endswith(": done"), outcome

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"browser errors: {self.errors}"


@pytest.fixture
def dashboard(browser: Any, stack: Stack, tmp_path: Path) -> Iterator[Dashboard]:
    board = Dashboard(browser, stack.base_url, tmp_path, stack.home / "api.log")
    yield board
    board.close()


def test_wrong_credential_is_refused(dashboard: Dashboard, stack: Stack) -> None:
    dashboard.sign_in("adm_wrong_" + ADMIN_TOKEN[-8:])
    error = dashboard.page.locator("#error")
    dashboard.page.wait_for_selector("#error:not(:empty)")
    assert "invalid admin credential" in error.text_content()
    assert "/dashboard/login" in dashboard.page.url
    assert dashboard.page.request.get(f"{stack.base_url}/api/learning").status == 401
    refused = httpx.post(f"{stack.base_url}/api/session", json={"token": "adm_nope"}, timeout=10)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers


def test_session_cookie_is_strict_and_actions_need_the_csrf_token(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        signed = client.post("/api/session", json={"token": ADMIN_TOKEN})
        assert signed.status_code == 200
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=" in cookie
        token = signed.json()["csrf_token"]
        assert client.get("/api/learning").status_code == 200  # reads need no token
        before = client.get("/api/learning").json()
        for headers in ({}, {"x-csrf-token": "forged"}, {"x-csrf-token": token[:-2]}):
            refused = client.post("/api/learning/pause", json={"reason": "csrf"}, headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["code"] == "csrf"
            assert client.put("/api/policy", json={"mode": "manual"}, headers=headers).status_code == 403
        assert client.get("/api/learning").json() == before
        assert not [e for e in audit(stack, "learning.pause") if e["reason"] == "csrf"]
        # Bearer calls need no CSRF token; the session works with its own token.
        assert stack.admin("GET", "/api/learning").status_code == 200
        paused = client.post(
            "/api/learning/resume", json={"reason": "csrf ok"}, headers={"x-csrf-token": token}
        )
        assert paused.status_code == 200 and paused.json()["updated_by"].endswith(":dashboard")
        assert client.delete("/api/session", headers={"x-csrf-token": token}).status_code == 204
        client.cookies.clear()
        client.cookies.set("borealis_session", signed.cookies["borealis_session"])
        assert client.get("/api/learning").status_code == 401, "a signed-out session must stay dead"


def test_operator_flow(dashboard: Dashboard, stack: Stack, tiny_model_dir: Path, tmp_path: Path) -> None:
    page = dashboard.page
    dashboard.sign_in(ADMIN_TOKEN)
    # The login URL ends in "?next=/dashboard" too, so a glob would match before the sign-in is done:
    # wait for the overview's path and its first refresh, which only a signed-in page makes.
    page.wait_for_url(lambda url: urlsplit(url).path == "/dashboard")
    page.wait_for_selector("#updated:has-text('updated')")

    # The first draft goes live under the default auto policy: a version to roll back to later.
    first = ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(
        make_draft_artifact(tiny_model_dir, tmp_path / "a", 1)
    )
    assert first.status == "live"
    wait_until(lambda: worker_version(stack) == first.version, 60, "worker on the first draft")

    # Learning page: switch to manual approval, pause and resume (keyboard only for the pause).
    dashboard.open("learning")
    page.locator("#mode-manual").check()
    dashboard.confirm("#save-policy", "operators approve from now on")
    assert stack.admin("GET", "/api/policy").json()["mode"] == "manual"
    page.wait_for_selector("#toggle-learning:has-text('Pause')")
    page.locator("#toggle-learning").focus()
    page.keyboard.press("Enter")
    page.keyboard.type("maintenance window")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    wait_until(lambda: stack.admin("GET", "/api/learning").json()["paused"], 10, "learning paused")
    page.wait_for_selector("#learning-state:has-text('paused')")
    dashboard.confirm("#toggle-learning:has-text('Resume')", "maintenance over")
    wait_until(lambda: not stack.admin("GET", "/api/learning").json()["paused"], 10, "learning resumed")
    reasons = [e["reason"] for e in audit(stack, "learning.pause")]
    assert "maintenance window" in reasons

    # Drafts page: approve a pending candidate, then roll back to the first draft.
    second = ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(
        make_draft_artifact(tiny_model_dir, tmp_path / "b", 2),
        parent_version=first.version,
        shadow_eval={"code": {"candidate": 1.9, "live": 1.6, "traces": 40}},
    )
    assert second.status == "pending_approval"
    dashboard.open("drafts")
    approve = f"button[data-action=approve][data-version={second.version}]"
    page.wait_for_selector(approve)
    dashboard.wait_points("fig-eval")
    dashboard.shot("drafts")
    dashboard.confirm(approve, "shadow eval beats live")
    wait_until(lambda: worker_version(stack) == second.version, 60, "worker on the approved draft")
    assert [e["reason"] for e in audit(stack, "draft.approve")] == ["shadow eval beats live"]
    rollback = f"button[data-action=rollback][data-version={first.version}]"
    page.wait_for_selector(rollback)
    dashboard.confirm(rollback, "prefer the first draft")
    wait_until(lambda: worker_version(stack) == first.version, 60, "worker back on the first draft")
    assert stack.admin("GET", f"/api/drafts/{second.version}").json()["status"] == "rolled_back"

    dashboard.open("learning")
    dashboard.wait_points("fig-shadow")
    dashboard.shot("learning")

    # Workers page shows the live version the worker reports, and each trainer's last round.
    progress = {
        "trainer": "trainer-dash",
        "round": 7,
        "status": "trained",
        "optimizer_steps": 140,
        "trained_records": 90,
        "heldout_records": 10,
        "trained_rows": 20000,
        "acked_records": 100,
        "holding_records": 0,
        "examples_from_features": 90,
        "examples_by_prefill": 0,
        "cpu_seconds": 321.0,
        "rss_bytes": 734003200,
    }
    assert stack.cluster("POST", "/internal/trainers/progress", json=progress).status_code == 200
    dashboard.open("workers")
    page.wait_for_selector(f"tr[data-worker=w1] td.version:has-text('{first.version}')")
    page.wait_for_selector("tr[data-trainer=trainer-dash] td.steps:has-text('140')")
    assert "700" in page.locator("tr[data-trainer=trainer-dash]").text_content()  # RSS in MiB
    dashboard.shot("workers")

    if UPDATE_SCREENSHOTS:
        time.sleep(45)  # README screenshots: let the traffic draw a longer stretch of the figures

    # Overview: figures drawn from the real traffic, with the swaps marked.
    dashboard.open("overview")
    for figure in ("fig-throughput", "fig-requests", "fig-acceptance"):
        dashboard.wait_points(figure)
    swaps = page.locator("#fig-acceptance")
    wait_until(lambda: int(swaps.get_attribute("data-swaps") or 0) >= 3, 30, "three swap markers")
    assert page.locator("#kpi-learning").text_content() == "learning"
    speedup = page.locator("#kpi-speedup")
    wait_until(
        lambda: re.search(r"target-only: \d+\.\d\d\u00d7", speedup.text_content() or "") is not None,
        30,
        "speedup over target-only reported",
    )
    share = page.locator("#kpi-draft-share")
    wait_until(
        lambda: (
            re.search(r"draft share of accepted tokens: \d+% \(n-gram \d+%", share.text_content() or "")
            is not None
        ),
        30,
        "draft share of accepted tokens reported",
    )
    assert first.version in page.locator("#workers").text_content()
    dashboard.shot("overview")

    dashboard.open("drift")
    for figure in ("fig-domain-acceptance", "fig-domain-mix"):
        dashboard.wait_points(figure)
    legend = page.locator("#fig-domain-mix .legend").text_content()
    assert all(domain in legend for domain in ("code", "chat", "math"))
    if stack.admin("GET", "/api/drift").status_code == 404:
        assert page.locator("#drift-missing").is_visible()
    dashboard.shot("drift")

    dashboard.open("audit")
    page.wait_for_selector("#audit td:has-text('prefer the first draft')")
    dashboard.shot("audit")

    for path in sorted(tmp_path.glob("*.png")):
        assert png_size(path) == (VIEWPORT["width"], VIEWPORT["height"])
    assert len(list(tmp_path.glob("*.png"))) == 6
    if UPDATE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for path in tmp_path.glob("*.png"):
            shutil.copy(path, SCREENSHOTS / path.name)

    page.locator("#sign-out").click()
    page.wait_for_url("**/dashboard/login")
    assert page.request.get(f"{stack.base_url}/api/learning").status == 401
