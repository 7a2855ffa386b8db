"""The leader actor: a thin wrapper that leads one shard on Dramatiq's event loop, through the process's conductor."""

from __future__ import annotations

import logging

import dramatiq

from ..config.settings import Settings
from ..engine.conductor import Conductor
from ..metrics import DeliveryMetrics
from .broker import queue_name
from .watch import FOREVER_MS, LEADER_ACTOR, LeaseWatch

log = logging.getLogger(__name__)

DECLINED_DELAY_MS = 250  # a shard declined here (spread) goes back to the queue this much later


def declare(broker: dramatiq.Broker, settings: Settings, watch: LeaseWatch) -> dramatiq.Actor:  # type: ignore[type-arg]
    """Declare ``lead_callbacks`` on ``broker``; ``watch`` keeps every shard led."""

    def resend(shard: int, declined: int) -> None:
        delay = DECLINED_DELAY_MS if declined else None
        lead_callbacks_actor.send_with_options(args=(shard, declined), delay=delay)

    conductor = Conductor(
        settings,
        resend=resend,
        should_stop=watch.stopping.is_set,
        observer=lambda shard: DeliveryMetrics(settings.namespace, shard),
    )
    watch.conduct(conductor)

    async def lead_callbacks(shard: int = 0, declined: int = 0) -> None:
        """Lead ``shard`` of the callback queue here (if the spread over processes allows) until it ends."""
        outcome = await conductor.lead(shard, declined)
        log.debug("lead_callbacks(%d) ended: %s", shard, outcome)  # None returned: Dramatiq keeps no results

    decorate = dramatiq.actor(
        actor_name=LEADER_ACTOR,
        broker=broker,
        max_retries=0,
        time_limit=FOREVER_MS,
        queue_name=queue_name(settings, "leader"),
    )
    lead_callbacks_actor: dramatiq.Actor = decorate(lead_callbacks)  # type: ignore[type-arg]
    return lead_callbacks_actor
