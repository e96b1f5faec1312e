"""Live acceptance windows and automatic rollback, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from backend.crud import audit, drafts
from backend.db.migrate import upgrade
from backend.db.session import make_engine, make_session_factory
from backend.services.live_monitor import LiveMonitor
from backend.services.registry import Registry
from backend.services.swaps import SwapPublisher
from borealis.settings import RollbackSettings
from borealis.wire import DraftRegistration

WINDOW = 10


Setup = tuple[sessionmaker[Session], SwapPublisher, LiveMonitor]


@pytest.fixture
def setup(database_url: str) -> Iterator[Setup]:
    """A migrated database, a publisher with nowhere to publish, and a monitor judging windows of 10."""
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    publisher = SwapPublisher("", "unused")
    yield (
        sessions,
        publisher,
        LiveMonitor(
            sessions, publisher, RollbackSettings(enabled=True, window=WINDOW, margin=0.1, judge_windows=3)
        ),
    )
    engine.dispose()


def _register(registry: Registry, candidate: float, live: float) -> str:
    registration = DraftRegistration(
        artifact_sha256=uuid.uuid4().hex * 2,  # distinct weights each time
        artifact_bytes=1,
        shadow_eval={"code": {"candidate": candidate, "live": live}},
    )
    version = registry.register(registration, "test").id
    registry.artifact_received(version, "test")
    return version


def _serve(monitor: LiveMonitor, version: str, acceptance_length: float, domain: str = "code") -> None:
    """WINDOW requests of 10 target steps each at the given tokens-per-step."""
    for _ in range(WINDOW):
        monitor.record(version, domain, steps=10, accepted=round(10 * (acceptance_length - 1)))


def test_a_worse_live_version_is_rolled_back_and_a_good_one_kept(setup: Setup) -> None:
    sessions, publisher, monitor = setup
    with sessions() as session:
        registry = Registry(session, publisher)
        first = _register(registry, 2.0, 1.0)  # nothing live yet: promoted by the auto policy
        assert drafts.live(session).id == first  # type: ignore[union-attr]
    _serve(monitor, first, 3.0)
    with sessions() as session:
        assert drafts.get(session, first).live_eval["mean_acceptance_length"] == 3.0  # type: ignore[union-attr]
        second = _register(Registry(session, publisher), 3.0, 2.0)
        assert drafts.live(session).id == second  # type: ignore[union-attr]
    _serve(monitor, second, 2.0)  # a third fewer tokens per step than the first: roll back
    with sessions() as session:
        assert drafts.live(session).id == first  # type: ignore[union-attr]
        assert drafts.get(session, second).status == drafts.ROLLED_BACK  # type: ignore[union-attr]
        (entry,) = audit.entries(session, 10, action="draft.auto_rollback")
        assert entry.target == first and entry.actor == "system:auto-rollback"
        third = _register(Registry(session, publisher), 3.5, 3.0)
    _serve(monitor, third, 2.9)  # within 10% of the first's 3.0: kept
    with sessions() as session:
        assert drafts.live(session).id == third  # type: ignore[union-attr]
        checks = audit.entries(session, 10, action="draft.live_check")
        assert checks[0].target == third


def test_a_domain_shift_at_swap_time_is_not_blamed_on_the_draft(setup: Setup) -> None:
    sessions, publisher, monitor = setup
    with sessions() as session:
        first = _register(Registry(session, publisher), 2.0, 1.0)
    _serve(monitor, first, 3.0, domain="code")
    with sessions() as session:
        second = _register(Registry(session, publisher), 3.0, 2.0)
    _serve(monitor, second, 1.5, domain="chat")  # chat drafts worse than code did: not comparable
    with sessions() as session:
        assert drafts.live(session).id == second  # type: ignore[union-attr]
        check = audit.entries(session, 10, action="draft.live_check")[0]
        assert check.target == second and "same domains" in check.reason
        assert not audit.entries(session, 10, action="draft.auto_rollback")


def test_a_worse_draft_behind_a_flood_of_fresh_labels_is_still_rolled_back(setup: Setup) -> None:
    """Windows with nothing comparable are not a pass: the check waits for comparable traffic."""
    sessions, publisher, monitor = setup
    with sessions() as session:
        first = _register(Registry(session, publisher), 2.0, 1.0)
    _serve(monitor, first, 3.0, domain="code")
    with sessions() as session:
        second = _register(Registry(session, publisher), 3.0, 2.0)
    for _ in range(3):
        _serve(monitor, second, 2.0, domain="other")  # labels the previous version never served
    with sessions() as session:
        assert drafts.live(session).id == second  # type: ignore[union-attr]
        checks = [c for c in audit.entries(session, 10, action="draft.live_check") if c.target == second]
        assert len(checks) == 3 and all("not yet judged" in c.reason for c in checks)
    _serve(monitor, second, 2.0, domain="code")
    with sessions() as session:
        assert drafts.live(session).id == first  # type: ignore[union-attr]
        assert audit.entries(session, 10, action="draft.auto_rollback")


def test_a_new_version_is_judged_over_several_windows(setup: Setup) -> None:
    sessions, publisher, monitor = setup
    with sessions() as session:
        first = _register(Registry(session, publisher), 2.0, 1.0)
    _serve(monitor, first, 3.0)
    with sessions() as session:
        second = _register(Registry(session, publisher), 3.0, 2.0)
    _serve(monitor, second, 3.0)  # the first window passes
    _serve(monitor, second, 2.0)  # the second falls: still within the judged windows
    with sessions() as session:
        assert drafts.live(session).id == first  # type: ignore[union-attr]
        assert drafts.get(session, second).status == drafts.ROLLED_BACK  # type: ignore[union-attr]
