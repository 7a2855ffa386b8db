"""The stream protocol written once: operations yield Redis calls, a sync or an async driver runs them.

An operation is a generator (sans-IO): it yields a :class:`Command`, a
:class:`Script` or a :class:`Batch`, receives the reply, parses it, and
returns its result. It builds every KEYS/ARGV list and reads every reply, so
the blocking fronts (ops, the status writer) and the asyncio front (the
leader) cannot drift apart: they only hand calls to a client.

The drivers are also the one place where Redis error replies become the
project's errors (:func:`converted`), thrown back into the operation so it can
handle them (``BUSYGROUP`` when a group exists is no failure). Connection
errors and timeouts propagate unchanged, as ``redis`` errors (see
:data:`worker.streams.client.REDIS_ERRORS`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..errors import LeaseLost, StreamGone
from .scripts import source

T = TypeVar("T")


@dataclass(frozen=True)
class Command:
    """One Redis command, named by its redis-py method (so redis-py parses the reply the same for both fronts)."""

    method: str
    args: tuple[Any, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Script:
    """One call of ``lua/<name>.lua`` (each documents its KEYS and ARGV)."""

    name: str
    keys: tuple[str, ...]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Batch:
    """Commands sent in one round trip, in MULTI/EXEC when ``transaction``; the reply is the list of replies.

    With ``raise_on_error`` false, a failed command's reply is its exception (unconverted).
    """

    commands: tuple[Command, ...]
    transaction: bool = False
    raise_on_error: bool = True


Call = Command | Script | Batch
Operation = Generator[Call, Any, T]


class GroupExists(Exception):
    """``BUSYGROUP``: the consumer group was there already (handled inside the operations, never raised out)."""


def converted(error: ResponseError) -> Exception:
    """The project's error for a Redis error reply, chained to it; other replies come back as they are.

    ``NOGROUP`` (group or stream deleted) and ``UNBLOCKED`` (deleted during a
    blocking read) are :class:`StreamGone`; ``FENCED`` (``reclaim.lua``) is
    :class:`LeaseLost`. Matched anywhere in the message: redis-py prefixes the
    errors of a MULTI with the failing command.
    """
    message = str(error)
    found: Exception
    if "NOGROUP" in message or "UNBLOCKED" in message:
        found = StreamGone(message)
    elif "FENCED" in message:
        found = LeaseLost(message)
    elif "BUSYGROUP" in message:
        found = GroupExists(message)
    else:
        return error
    found.__cause__ = error
    return found


class _Driver:
    """What both drivers share: the client and its registered scripts (registered once, on first use)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._scripts: dict[str, Any] = {}

    def _script(self, name: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.client.register_script(source(name))
        return self._scripts[name]

    def _pipeline(self, batch: Batch) -> Any:
        pipe = self.client.pipeline(transaction=batch.transaction)
        for command in batch.commands:
            getattr(pipe, command.method)(*command.args, **command.options)
        return pipe


class SyncDriver(_Driver):
    """Runs operations over a blocking client."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)

    def run(self, operation: Operation[T]) -> T:
        """Execute every call ``operation`` yields; its result, or the error it did not handle."""
        try:
            call = next(operation)
            while True:
                try:
                    reply = self._execute(call)
                except ResponseError as e:
                    call = operation.throw(converted(e))
                else:
                    call = operation.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _execute(self, call: Call) -> Any:
        if isinstance(call, Command):
            return getattr(self.client, call.method)(*call.args, **call.options)
        if isinstance(call, Script):
            return self._script(call.name)(keys=list(call.keys), args=list(call.args))
        return self._pipeline(call).execute(raise_on_error=call.raise_on_error)


async def _cancellable(call: Awaitable[T]) -> T:
    """Await one asyncio Redis call, and raise a cancellation that came while it ran but did not surface.

    redis-py writes each command under ``asyncio.wait_for`` (its socket timeout), and on
    Python 3.11 ``wait_for`` drops a cancellation that arrives as the write completes: the
    call then returns as if nothing had happened (measured: three of six cancellation
    timings), and a cancelled loop ran on, so a leader stepping down waited for it forever.
    The task still counts the request (:meth:`asyncio.Task.cancelling`); it is raised here.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await call
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError("cancelled during a Redis call")
    return result


class AsyncDriver(_Driver):
    """Runs operations over an asyncio client (the same calls, awaited)."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)

    async def run(self, operation: Operation[T]) -> T:
        """Execute every call ``operation`` yields; its result, or the error it did not handle."""
        try:
            call = next(operation)
            while True:
                try:
                    reply = await self._execute(call)
                except ResponseError as e:
                    call = operation.throw(converted(e))
                else:
                    call = operation.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _execute(self, call: Call) -> Any:
        if isinstance(call, Command):
            return await _cancellable(getattr(self.client, call.method)(*call.args, **call.options))
        if isinstance(call, Script):
            return await _cancellable(self._script(call.name)(keys=list(call.keys), args=list(call.args)))
        return await _cancellable(self._pipeline(call).execute(raise_on_error=call.raise_on_error))
