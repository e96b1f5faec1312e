"""The auto policy judges a candidate by a paired interval on the same held-out traces."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from backend.crud import audit, drafts
from backend.db.migrate import upgrade
from backend.db.models import utcnow
from backend.db.session import make_engine, make_session_factory
from backend.services.registry import Registry, beats_live
from backend.services.swaps import SwapPublisher
from borealis.wire import DraftRegistration
from worker.draft.shadow import paired_interval, traffic_weighted_diff, traffic_weights


def scores(shift: float, traces: int = 64, seed: int = 0) -> tuple[list[float], list[float]]:
    """Live per-trace acceptance varying widely between traces; the candidate ``shift`` above it."""
    rng = np.random.default_rng(seed)
    live = rng.uniform(1.2, 3.5, traces)
    candidate = live + shift + rng.normal(0.0, 0.15, traces)
    return candidate.tolist(), live.tolist()


def shadow(candidate: list[float], live: list[float]) -> dict[str, dict[str, float]]:
    low, high = paired_interval(candidate, live)
    return {"all": {"candidate": float(np.mean(candidate)), "live": float(np.mean(live)),
                    "traces": float(len(live)), "diff_low": low, "diff_high": high}}  # fmt: skip


def test_the_interval_separates_better_equal_and_worse() -> None:
    low, high = paired_interval(*scores(0.3))
    assert 0.2 < low < 0.3 < high < 0.4
    low, high = paired_interval(*scores(0.0))
    assert low < 0.0 < high
    low, high = paired_interval(*scores(-0.3))
    assert high < 0.0


def test_a_clearly_better_candidate_passes_and_an_equal_or_worse_one_is_held() -> None:
    assert beats_live(shadow(*scores(0.3)), margin=0.0)[0]
    assert beats_live(shadow(*scores(0.3)), margin=0.05)[0]  # 0.3 tokens/step > 5% of ~2.35
    for shift in (0.0, -0.3):
        verdict, reason = beats_live(shadow(*scores(shift)), margin=0.0)
        assert not verdict and "paired 95% interval" in reason


def test_a_pooled_mean_above_the_margin_is_not_enough_when_the_pairs_disagree() -> None:
    """Two traces where the candidate wins big, many where it loses a little: the pooled margin
    rule would promote; the paired interval does not."""
    live = [1.5] * 30 + [2.0, 2.0]
    candidate = [1.45] * 30 + [6.0, 6.0]
    judged = shadow(candidate, live)
    assert judged["all"]["candidate"] > judged["all"]["live"] * 1.05
    assert not beats_live(judged, margin=0.05)[0]


Counts = list[tuple[int, int]]


def counts(acceptance: np.ndarray) -> Counts:
    """Per-trace (tokens emitted, verification steps) at these acceptance lengths, 100 steps each."""
    return [(round(100 * a), 100) for a in acceptance]


def shifted_judgement(new_gain: float, old_gain: float, seed: int = 0) -> tuple[list[str], Counts, Counts]:
    """After a shift: 24 fresh traces of the domain now served (code) and 40 older held-out ones of the
    domain that stopped arriving (chat), each with its own trace-to-trace noise."""
    rng = np.random.default_rng(seed)
    live = rng.uniform(1.2, 2.2, 64)
    gain = np.concatenate([new_gain + rng.normal(0.0, 0.15, 24), old_gain + rng.normal(0.0, 0.25, 40)])
    domains = ["code"] * 24 + ["chat"] * 40
    return domains, counts(live + gain), counts(live)


def weighted_shadow(
    domains: list[str], ours: Counts, theirs: Counts, recent: list[str]
) -> dict[str, dict[str, float]]:
    judged = traffic_weighted_diff(domains, ours, theirs, traffic_weights(recent, domains))
    return {"all": {"candidate": judged.candidate, "live": judged.live, "traces": float(judged.traces),
                    "diff_low": judged.low, "diff_high": judged.high}}  # fmt: skip


def test_weights_follow_recent_traffic_with_a_floor_for_a_domain_that_stopped() -> None:
    weights = traffic_weights(["code"] * 24, ["code"] * 24 + ["chat"] * 40)
    assert weights == pytest.approx({"code": 1 / 1.1, "chat": 0.1 / 1.1})
    assert traffic_weights([], ["code"] * 1 + ["chat"] * 3) == pytest.approx({"code": 0.25, "chat": 0.75})
    assert traffic_weights(["prose"] * 5, ["code", "chat"]) == pytest.approx({"chat": 0.5, "code": 0.5})


def test_a_gain_on_what_is_served_now_passes_where_a_per_trace_pool_dilutes_it() -> None:
    """A candidate better on the new domain and unchanged on the old one: pooled per trace, the 40
    old traces hide the gain; weighted by recent traffic, it is better beyond doubt."""
    domains, ours, theirs = shifted_judgement(new_gain=0.12, old_gain=0.0)
    pooled = shadow([e / s for e, s in ours], [e / s for e, s in theirs])
    assert not beats_live(pooled, margin=0.0)[0]
    assert beats_live(weighted_shadow(domains, ours, theirs, ["code"] * 24), margin=0.0)[0]
    # the same candidate judged while chat is what arrives: held
    assert not beats_live(weighted_shadow(domains, ours, theirs, ["chat"] * 24), margin=0.0)[0]


def test_a_candidate_better_only_on_a_domain_that_stopped_is_held() -> None:
    domains, ours, theirs = shifted_judgement(new_gain=0.0, old_gain=0.3)
    assert not beats_live(weighted_shadow(domains, ours, theirs, ["code"] * 24), margin=0.0)[0]


def test_a_domain_with_too_few_traces_for_a_spread_is_pooled_not_trusted() -> None:
    """Two traces of a new domain, both far ahead, cannot decide alone however much it is served."""
    live = np.full(42, 1.5)
    ours = counts(np.concatenate([[3.0, 3.0], live[2:] + np.random.default_rng(1).normal(-0.02, 0.2, 40)]))
    domains = ["code"] * 2 + ["chat"] * 40
    judged = traffic_weighted_diff(domains, ours, counts(live), traffic_weights(["code"] * 8, domains))
    assert judged.low < 0.0 < judged.high and judged.traces == 42


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_the_registry_promotes_by_the_paired_rule(sessions: sessionmaker[Session]) -> None:
    publisher = SwapPublisher("", "unused")

    def register(shadow_eval: dict[str, dict[str, float]]) -> str:
        with sessions() as session:
            registry = Registry(session, publisher)
            registration = DraftRegistration(
                artifact_sha256=uuid.uuid4().hex * 2, artifact_bytes=1, shadow_eval=shadow_eval
            )
            version = registry.register(registration, "test").id
            return registry.artifact_received(version, "test").status

    assert register(shadow(*scores(0.3))) == drafts.LIVE  # the first draft: nothing live
    assert register(shadow(*scores(0.0))) == drafts.CANDIDATE
    assert register(shadow(*scores(0.3, seed=1))) == drafts.LIVE
    with sessions() as session:
        held = audit.entries(session, 10, action="draft.held")
        assert len(held) == 1 and "does not lie above" in held[0].reason


def test_registration_is_idempotent_and_abandoned_uploads_are_closed(sessions: sessionmaker[Session]) -> None:
    publisher = SwapPublisher("", "unused")
    registration = DraftRegistration(
        artifact_sha256="b" * 64, artifact_bytes=1, shadow_eval=shadow(*scores(0.3))
    )
    with sessions() as session:
        first = Registry(session, publisher).register(registration, "test").id
        again = Registry(session, publisher).register(registration, "test").id  # a publisher's retry
        assert again == first and len(drafts.listing(session)) == 1
        stale = drafts.get(session, first)
        assert stale is not None and stale.status == drafts.UPLOADING
        stale.created_at = utcnow() - timedelta(hours=2)
        session.commit()
        other = DraftRegistration(artifact_sha256="c" * 64, artifact_bytes=1)
        Registry(session, publisher).register(other, "test")
        closed = drafts.get(session, first)
        assert closed is not None and closed.status == drafts.REJECTED
        assert [e.target for e in audit.entries(session, 10, action="draft.upload_abandoned")] == [first]
