"""Celery's Redis transport, made to survive losing Redis while it holds unacknowledged tasks.

With late acks a training worker always holds one unacknowledged task: the round it is running, or
the next one waiting out its countdown. When Redis goes away, Celery closes the channel and kombu's
Redis transport puts those tasks back on the queue through a connection pool it can no longer
build; the error it raises (``AttributeError`` from ``_connparams``) ends the worker. Here a restore
that fails is logged and the worker goes on reconnecting: the tasks stay in Redis's unacknowledged
index, where kombu redelivers them after the visibility timeout, or, if Redis came back empty, they
are gone and the training-loop watchdog (``worker.training.tasks``) opens a new chain.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

TRANSPORT = f"{__name__}:Transport"  # the value for Celery's ``broker_transport``


class RestoreTolerantQoS(kombu_redis.QoS):  # type: ignore[misc]
    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)
        except (AttributeError, OSError, redis.RedisError) as exc:
            log.warning(
                "broker unreachable: %d unacknowledged task(s) left to Redis's redelivery (%s)",
                len(self._delivered),
                exc,
            )
            self._delivered.clear()


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = RestoreTolerantQoS


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
