"""Image-edit tasks: from a task id or dict to a saved result, a recorded status and a callback.

A task is ``{task_id, image (base64) | image_path, callback_url?, stages?, params?}``,
or the id of an ``image_edit_tasks`` row holding the same. Its status goes to
the status stream (the coalescing writer puts it in the database): ``running``
with ``started_at`` when it starts, then ``success`` or ``failed`` with the
stage timings, result path or error. Its callback payload is::

    success: {task_id, status: "success", image (base64), image_path, timings, finished_at}
    failure: {task_id, status: "failed", error: {code, message, stage}, finished_at}

The callback goes through the stream (batch mode) or straight to the receiver
(``CALLBACK_IMMEDIATE``, and as the fallback when Redis refuses the enqueue).
Without a ``callback_url`` the task's callback status is ``not_required``.

With ``CALLBACK_AFTER_COMMIT`` the callback waits until the status writer has
committed the task's final row, so a receiver that reads the row when the
webhook arrives sees the outcome: the entry carries the final update's status
entry id (``after``) and the leader holds it until the writer's committed mark
covers it. Immediate delivery polls the mark for up to ``COMMIT_WAIT`` seconds
before it POSTs; if the row is still not committed then, the callback goes
through the stream with ``after``, held like any other.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import Engine, select

from . import metrics
from .config.runtime import RuntimeFollower
from .config.settings import Settings
from .engine.immediate import ImmediateResult, deliver_now
from .errors import EnqueueFailed, InvalidCallback, WorkerError
from .images import ImageConfig, ImageError, decode_base64_image, run_pipeline
from .producer import CallbackProducer, encode_payload
from .streams.client import REDIS_ERRORS
from .streams.entry import CallbackEntry, id_problem
from .streams.keys import Keys
from .streams.protocol import SyncDriver
from .streams.status import StatusUpdate, committed, covers, now_ms, record_status

log = logging.getLogger(__name__)

TASK_KEYS = frozenset({"task_id", "image", "image_path", "callback_url", "stages", "params"})
MAX_TASK_ID = 128
MAX_PARAMS_DEPTH = 32  # stage parameters are flat in practice; deep nesting is an attack on every decoder
COMMIT_WAIT = 3.0  # seconds immediate delivery waits for the task's row to be committed (CALLBACK_AFTER_COMMIT)
COMMIT_POLL = 0.02  # seconds between its reads of the committed mark


class InvalidTask(WorkerError, ValueError):
    """A task message that cannot be run: say what is wrong and how to fix it."""


@dataclass(frozen=True)
class ImageTask:
    """One task, validated."""

    task_id: str
    image: str | None = None
    image_path: str | None = None
    callback_url: str | None = None
    stages: tuple[str, ...] | None = None
    params: dict[str, Any] = field(default_factory=dict)


def parse_task(raw: object) -> ImageTask:
    """Validate a task dict; raises :class:`InvalidTask` naming the problem."""
    if not isinstance(raw, Mapping):
        raise InvalidTask(f"a task is a dict or a task id string, got {type(raw).__name__}")
    unknown = set(raw) - TASK_KEYS
    if unknown:
        shown = sorted(str(key)[:40] for key in unknown)[:10]
        raise InvalidTask(f"unknown task keys {shown}; known: {sorted(TASK_KEYS)}")
    task_id = _task_id(raw.get("task_id"))
    image, path = raw.get("image"), raw.get("image_path")
    if (image is None) == (path is None):
        raise InvalidTask(f"task {task_id}: give exactly one of 'image' (base64) and 'image_path'")
    for name, value in (("image", image), ("image_path", path), ("callback_url", raw.get("callback_url"))):
        if value is not None and not isinstance(value, str):
            raise InvalidTask(f"task {task_id}: '{name}' must be a string, got {type(value).__name__}")
    stages = raw.get("stages")
    if stages is not None and not (isinstance(stages, list) and all(isinstance(s, str) for s in stages)):
        raise InvalidTask(f"task {task_id}: 'stages' must be a list of stage names")
    params = raw.get("params") or {}
    if not isinstance(params, Mapping):
        raise InvalidTask(f"task {task_id}: 'params' must be an object")
    if _depth(params) > MAX_PARAMS_DEPTH:
        raise InvalidTask(f"task {task_id}: 'params' nest deeper than {MAX_PARAMS_DEPTH} levels; flatten them")
    return ImageTask(task_id, image, path, raw.get("callback_url"), tuple(stages) if stages else None, dict(params))


def _task_id(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_TASK_ID or id_problem(value):
        shown = type(value).__name__ if not isinstance(value, str) else f"{len(value)} characters"
        raise InvalidTask(
            f"'task_id' must be a non-empty string of at most {MAX_TASK_ID} printable characters, got {shown}"
        )
    return value


def _depth(value: object, limit: int = MAX_PARAMS_DEPTH + 1) -> int:
    """How deep ``value`` nests (lists and objects), counted no further than ``limit`` (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping | list) and level <= limit:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, Mapping) else item))
    return deepest


def load_task(task_id: str, engine: Engine) -> ImageTask:
    """The task stored in ``image_edit_tasks`` under ``task_id`` (its image by ``input_path``)."""
    from .storage.models import ImageEditTask

    with engine.connect() as connection:
        row = connection.execute(select(ImageEditTask).where(ImageEditTask.task_id == _task_id(task_id))).first()
    if row is None:
        raise InvalidTask(
            f"no image_edit_tasks row has task_id {task_id!r}; send the task as a dict, or insert it first"
        )
    task = row._mapping
    if not task["input_path"]:
        raise InvalidTask(f"task {task_id}: its row has no input_path (relative to MEDIA_ROOT)")
    return parse_task(
        {
            "task_id": task_id,
            "image_path": task["input_path"],
            "callback_url": task["callback_url"],
            "stages": task["stages"],
            "params": task["params"],
        }
    )


class TaskRunner:
    """Runs tasks in one process: built once, with the connections and configuration every task shares."""

    def __init__(self, settings: Settings, client: redis.Redis, engine: Engine | None = None) -> None:
        self.client = client
        self.engine = engine
        self.keys = Keys(settings.namespace, settings.queue)  # shard 0: image tasks' status updates go there
        self._driver = SyncDriver(client)
        self.runtime = RuntimeFollower(settings, self.keys)  # run-time overrides apply on top of ``settings``
        self._use(settings)

    def _use(self, settings: Settings) -> None:
        self.settings = settings
        self.config = ImageConfig.from_settings(settings)
        self.producer = CallbackProducer(settings, self.client)

    def reload_config(self) -> None:
        """Apply the run-time configuration if it changed (an invalid one is logged and ignored)."""
        settings = self.runtime.poll(self.client)
        if settings is not None:
            self._use(settings)

    def process(self, message: str | Mapping[str, Any]) -> dict[str, Any]:
        """Run one task (an id or a dict) to its end; returns the callback payload."""
        self.reload_config()
        if isinstance(message, str):
            if self.engine is None:
                raise InvalidTask("this worker has no database to load task ids from; send the task as a dict")
            task = load_task(message, self.engine)
        else:
            task = parse_task(message)
        started = now_ms()
        self._record(task.task_id, started, status="running", started_at=started, **_inputs(task))
        payload, outcome = self._run(task)
        final = self._record(task.task_id, now_ms(), **outcome)
        after = final if self.settings.after_commit else None  # None too when the update was not recorded
        self._record(task.task_id, now_ms(), **self.execute_callback(task, payload, after=after))
        return payload

    def _run(self, task: ImageTask) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            source: bytes | str = (
                decode_base64_image(task.image, max_bytes=self.config.limits.max_bytes)
                if task.image is not None
                else task.image_path or ""
            )
            result = run_pipeline(source, self.config, stages=task.stages, params=task.params, task_id=task.task_id)
        except ImageError as e:
            finished = now_ms()
            log.warning("task %s failed in %s: %s", task.task_id, e.stage, e)
            _observe(self.keys.namespace, e.timings, "failed")
            metrics.IMAGE_FAILURES.labels(self.keys.namespace, e.code, e.stage or "unknown").inc()
            payload = {
                "task_id": task.task_id,
                "status": "failed",
                "error": e.as_payload(),
                "finished_at": _iso(finished),
            }
            outcome = {"status": "failed", "stage": e.stage, "timings": e.timings, "error_code": e.code}
            return payload, {**outcome, "error_message": e.message, "finished_at": finished}
        finished = now_ms()
        _observe(self.keys.namespace, result.timings, "success")
        payload = {
            "task_id": task.task_id,
            "status": "success",
            "image": result.image_b64,
            "image_path": result.path,
            "timings": result.timings,
            "finished_at": _iso(finished),
        }
        last_stage = result.stages[-1] if result.stages else None
        outcome = {"status": "success", "stage": last_stage, "timings": result.timings, "result_path": result.path}
        return payload, {**outcome, "finished_at": finished}

    def execute_callback(self, task: ImageTask, payload: dict[str, Any], *, after: str | None = None) -> dict[str, Any]:
        """Send the task's callback; returns the task row's callback columns.

        ``after``: the status entry id of the task's final update, which must be
        committed before the first attempt (see the module docstring).
        """
        url = task.callback_url
        if not url:
            return {"callback_status": "not_required"}
        if after is not None and self.settings.immediate and self._wait_for_commit(task.task_id, after):
            after = None  # committed: deliver now
        if not self.settings.immediate or after is not None:
            try:
                callback_id = self.producer.enqueue(url, payload, task_id=task.task_id, after=after)
                return {"callback_id": callback_id, "callback_status": "queued"}
            except InvalidCallback as e:
                log.error("task %s: its callback cannot be sent: %s", task.task_id, e)
                return {"callback_status": "dead", "callback_last_error": str(e)[:500]}
            except EnqueueFailed as e:
                log.warning("task %s: enqueue failed (%s); delivering its callback immediately", task.task_id, e)
        try:
            result = deliver_now(self.settings, url, payload, client=self.client, task_id=task.task_id)
        except InvalidCallback as e:
            return {"callback_status": "dead", "callback_last_error": str(e)[:500]}
        if result.state == "retrying":
            self._hand_over(task, payload, result)
        columns = {
            "callback_id": result.callback_id,
            "callback_status": result.state,
            "callback_attempts": result.attempts,
            "callback_last_status_code": result.status_code,
        }
        return {**columns, "callback_last_error": result.error}

    def _wait_for_commit(self, task_id: str, after: str) -> bool:
        """Whether the committed mark covers status entry ``after`` within ``COMMIT_WAIT`` s (Redis down: no)."""
        deadline = time.monotonic() + COMMIT_WAIT
        while True:
            try:
                if covers(self._driver.run(committed(self.keys)), after):
                    return True
            except REDIS_ERRORS as e:
                log.warning("task %s: the committed mark cannot be read (%s)", task_id, e)
                return False
            if time.monotonic() >= deadline:
                log.warning(
                    "task %s: its row was not committed within %.0fs (is the status writer running?); "
                    "its callback goes through the queue and waits there",
                    task_id,
                    COMMIT_WAIT,
                )
                return False
            time.sleep(COMMIT_POLL)

    def _hand_over(self, task: ImageTask, payload: Any, result: ImmediateResult) -> None:
        # Immediate delivery wants another attempt later than it waits: the leader takes it from here.
        now = now_ms()
        body = encode_payload(payload, self.settings.max_payload_bytes)
        entry = CallbackEntry(
            result.callback_id, task.callback_url or "", body, task.task_id, result.attempts, now, now
        )
        try:
            self.producer.schedule(entry, result.retry_in or 0.0)
        except EnqueueFailed as e:
            log.error("task %s: callback %s needs a retry but Redis refused it: %s", task.task_id, entry.callback_id, e)

    def _record(self, task_id: str, at: int, **fields: Any) -> str | None:
        """Append one update of the task's row to shard 0's status stream; its entry id (``None``: not recorded)."""
        update = StatusUpdate("image_edit_tasks", task_id, at, fields)
        try:
            return record_status([update], self.client, self.keys)
        except redis.RedisError as e:  # status is best effort; the task and its callback go on
            log.warning("task %s: status not recorded (%s): %s", task_id, e, fields.get("status"))
            return None


def _inputs(task: ImageTask) -> dict[str, Any]:
    return {
        "callback_url": task.callback_url,
        "input_path": task.image_path,
        "stages": list(task.stages) if task.stages else None,
        "params": task.params or None,
    }


def _observe(namespace: str, timings: Mapping[str, float], outcome: str) -> None:
    for step, seconds in timings.items():
        metrics.IMAGE_STAGE.labels(namespace, step).observe(seconds)
    metrics.IMAGE_TASKS.labels(namespace, outcome).inc()


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
