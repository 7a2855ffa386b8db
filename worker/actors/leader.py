"""The leader actor: a thin wrapper that runs the leader loop on Dramatiq's event loop."""

from __future__ import annotations

import logging

import dramatiq

from ..config.settings import Settings
from ..engine.term import lead
from ..metrics import DeliveryMetrics
from ..streams.keys import Keys
from .broker import queue_name
from .watch import FOREVER_MS, LEADER_ACTOR, LeaseWatch

log = logging.getLogger(__name__)


def declare(broker: dramatiq.Broker, settings: Settings, watch: LeaseWatch) -> dramatiq.Actor:  # type: ignore[type-arg]
    """Declare ``lead_callbacks`` on ``broker``, kept alive by ``watch``."""
    keys = Keys(settings.namespace, settings.queue)
    watch.watch(LEADER_ACTOR, lease=keys.leader_lease, election_key=keys.election)

    async def lead_callbacks() -> None:
        """Lead the callback queue until shutdown or deposition; hand over if it ends early."""
        outcome = await lead(settings, should_stop=watch.stopping.is_set, observer=DeliveryMetrics(settings.namespace))
        if outcome.reason in ("lost", "stopped") and not watch.stopping.is_set():
            lead_callbacks_actor.send()  # keep a candidate in circulation
        log.debug("lead_callbacks ended: %s", outcome.reason)  # None returned: Dramatiq keeps no results

    decorate = dramatiq.actor(
        actor_name=LEADER_ACTOR,
        broker=broker,
        max_retries=0,
        time_limit=FOREVER_MS,
        queue_name=queue_name(settings, "leader"),
    )
    lead_callbacks_actor: dramatiq.Actor = decorate(lead_callbacks)  # type: ignore[type-arg]
    return lead_callbacks_actor
