"""The image-edit actor: decode the message, run the task (see :mod:`worker.tasks`)."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq

from ..config.settings import Settings
from ..streams.client import sync_client
from ..tasks import InvalidTask, TaskRunner
from .broker import queue_name

IMAGE_ACTOR = "process_image_edit_task"
IMAGE_QUEUE = "images"


def declare(broker: dramatiq.Broker, settings: Settings) -> dramatiq.Actor:  # type: ignore[type-arg]
    """Declare ``process_image_edit_task`` on ``broker``; each process builds its runner on first use."""
    runner: list[TaskRunner] = []
    lock = threading.Lock()

    def shared_runner() -> TaskRunner:
        with lock:
            if not runner:
                from ..storage.engine import make_engine

                runner.append(TaskRunner(settings, sync_client(settings.redis_url), make_engine(settings.database_url)))
            return runner[0]

    def process_image_edit_task(task: str | dict[str, Any]) -> None:
        """Run one image-edit task: a task id (loaded from the database) or a task dict."""
        shared_runner().process(task)

    # A malformed task fails the same way on every try: it is not retried (Dramatiq logs it).
    decorate = dramatiq.actor(
        actor_name=IMAGE_ACTOR, broker=broker, queue_name=queue_name(settings, IMAGE_QUEUE), throws=(InvalidTask,)
    )
    actor: dramatiq.Actor = decorate(process_image_edit_task)  # type: ignore[type-arg]
    return actor
