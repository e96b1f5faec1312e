"""Worker heartbeats and health on both databases."""

from __future__ import annotations

from datetime import timedelta

from backend.crud.workers import healthy_workers, list_workers, upsert_heartbeat
from backend.db.migrate import upgrade
from backend.db.models import Worker, utcnow
from backend.db.session import make_engine, make_session_factory
from borealis.wire import WorkerRegistration


def _beat(worker_id: str, active: int = 0) -> WorkerRegistration:
    return WorkerRegistration(
        worker_id=worker_id,
        url=f"http://{worker_id}",
        model="m",
        active_requests=active,
        max_context_tokens=2048,
    )


def test_heartbeat_upserts_and_stale_workers_are_unhealthy(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        upsert_heartbeat(session, _beat("a"))
        upsert_heartbeat(session, _beat("b"))
        upsert_heartbeat(session, _beat("a", active=3))
        assert [w.id for w in list_workers(session)] == ["a", "b"]
        assert session.get(Worker, "a").active_requests == 3  # type: ignore[union-attr]
        stale = session.get(Worker, "b")
        assert stale is not None
        stale.last_heartbeat_at = utcnow() - timedelta(seconds=60)
        session.commit()
    with sessions() as session:
        assert [w.id for w in healthy_workers(session, stale_after_s=10)] == ["a"]
    engine.dispose()


def test_running_and_waiting_gauges_split_what_healthy_workers_admitted(database_url: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from backend.services.state_metrics import ControlPlaneState

    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    state = ControlPlaneState(sessions, stale_after_s=10, model_name="m")
    with sessions() as session:
        for worker, active, waiting in (("a", 11, 3), ("b", 2, 0)):
            beat = _beat(worker, active=active).model_copy(update={"waiting_requests": waiting})
            upsert_heartbeat(session, beat)
            state.report_worker(beat)
    registry = CollectorRegistry()
    registry.register(state)
    text = generate_latest(registry).decode()
    assert 'borealis:num_requests_running{model_name="m"} 10.0' in text  # 8 + 2 in decoding batches
    assert 'borealis:num_requests_waiting{model_name="m"} 3.0' in text
    engine.dispose()
