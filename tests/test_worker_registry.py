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
