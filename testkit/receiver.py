"""A local webhook receiver for tests, benchmarks and the demo.

It verifies Standard Webhooks signatures with the public ``standardwebhooks``
library and records every arrival. Paths choose its behaviour:

=======================  ==============================================================
``/ok``                  204
``/status/<code>``       answers ``<code>``
``/hostile/<code>``      answers ``<code>`` with a body of NUL and control characters
``/flaky/<n>``           500 for the first ``n`` attempts of each webhook-id, then 204
``/chaos/<percent>``     500 to ``percent`` % of requests at random, else 204; each answer is a pure
                         function of (webhook-id, attempt) (:func:`chaos_fails`), so a test can tell
                         afterwards which arrivals were answered 2xx
``/retry-after/<s>``     first attempt 429 with ``Retry-After: <s>``, then 204
``/limit/<rate>``        204 up to ``rate`` per second (a token bucket per path), beyond: 429, ``Retry-After: 1``
``/outage/<s>``          503 to everything for ``s`` seconds after the path's first request, then 204
``/slow/<ms>``           waits ``ms`` milliseconds, then 204
``/hang``                never answers (until the client gives up)
``/redirect``            302 to ``/ok`` (the worker must not follow it)
``/big``                 200 with a 10 MiB body
``/_stats``              GET: JSON counts, for a receiver in another process
=======================  ==============================================================

Run it on its own with ``python -m testkit.receiver --port 8080 [--secret whsec_...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

CHAOS_SEED = "receiver-chaos"


def chaos_fails(percent: float, webhook_id: str, attempt: int) -> bool:
    """Whether ``/chaos/<percent>`` answers 500 to this webhook-id's ``attempt``-th arrival (1-based)."""
    return random.Random(f"{CHAOS_SEED}:{webhook_id}:{attempt}").random() * 100 < percent


@dataclass(frozen=True)
class Arrival:
    """One request as the receiver saw it."""

    webhook_id: str
    path: str
    at: float  # time.time() on arrival
    verified: bool | None
    body: bytes
    headers: dict[str, str]


class Receiver:
    """An aiohttp app that records arrivals; run it in a thread with :meth:`start`."""

    def __init__(self, secret: str | None = None, *, record_bodies: bool = True) -> None:
        self._verifier = Webhook(secret) if secret else None
        self._record_bodies = record_bodies
        self._lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.counts: Counter[str] = Counter()
        self._attempts: Counter[tuple[str, str]] = Counter()
        self.answers: list[tuple[float, str, int]] = []  # (time, path, status) of every response
        self._buckets: dict[str, tuple[float, float]] = {}  # /limit/<rate>: path -> (tokens, last refill)
        self._outages: dict[str, float] = {}  # /outage/<seconds>: path -> first arrival
        self.port = 0
        self._server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/_stats", self._stats)
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        with self._lock:
            ids = {a.webhook_id for a in self.arrivals}
            body = {"requests": sum(self.counts.values()), "by_path": dict(self.counts), "unique_ids": len(ids)}
        return web.json_response(body)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        verified = None
        if self._verifier is not None:
            try:
                self._verifier.verify(body, dict(request.headers))
                verified = True
            except WebhookVerificationError:
                verified = False
        path = request.path
        with self._lock:
            self.arrivals.append(
                Arrival(
                    webhook_id,
                    path,
                    time.time(),
                    verified,
                    body if self._record_bodies else b"",
                    dict(request.headers) if self._record_bodies else {},
                )
            )
            self.counts[path] += 1
            self._attempts[(path, webhook_id)] += 1
            attempt = self._attempts[(path, webhook_id)]
        response = await self._respond(path, attempt, webhook_id)
        with self._lock:
            self.answers.append((time.time(), path, response.status))
        return response

    def _within_limit(self, path: str, rate: float) -> bool:
        # A token bucket per path: ``rate`` per second, a burst of a fifth of a second.
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(path, (max(1.0, rate / 5), now))
            tokens = min(max(1.0, rate / 5), tokens + (now - last) * rate)
            allowed = tokens >= 1.0
            self._buckets[path] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def _in_outage(self, path: str, seconds: float) -> bool:
        now = time.monotonic()
        with self._lock:
            first = self._outages.setdefault(path, now)
        return now - first < seconds

    async def _respond(self, path: str, attempt: int, webhook_id: str) -> web.StreamResponse:
        parts = path.strip("/").split("/")
        head, arg = parts[0], (parts[1] if len(parts) > 1 else "")
        if head == "status":
            return web.Response(status=int(arg), text=f"status {arg}")
        if head == "hostile":
            return web.Response(status=int(arg), body=b"gone\x00!\x1b[31m\xff\xfe")
        if head == "flaky":
            return web.Response(status=500 if attempt <= int(arg) else 204)
        if head == "chaos":
            return web.Response(status=500 if chaos_fails(float(arg), webhook_id, attempt) else 204)
        if head == "retry-after":
            if attempt == 1:
                return web.Response(status=429, headers={"Retry-After": arg})
            return web.Response(status=204)
        if head == "limit":  # accepts <arg> per second; beyond: 429 with Retry-After: 1
            if self._within_limit(path, float(arg)):
                return web.Response(status=204)
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        if head == "outage":  # 503 to everything for <arg> seconds after the first request, then 204
            if self._in_outage(path, float(arg)):
                return web.Response(status=503, text="down")
            return web.Response(status=204)
        if head == "slow":
            await asyncio.sleep(int(arg) / 1000)
            return web.Response(status=204)
        if head == "hang":
            await asyncio.sleep(3600)
        if head == "redirect":
            raise web.HTTPFound("/ok")
        if head == "big":
            return web.Response(status=200, body=b"x" * (10 * 1024 * 1024))
        return web.Response(status=204)

    # -- running in a background thread ---------------------------------------------------------

    def start(self, port: int = 0) -> Receiver:
        """Serve on 127.0.0.1 in a daemon thread; returns once it listens."""
        self._server = BackgroundServer(self.app, "receiver")
        self.port = self._server.start(port)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is not None:
            self._server.stop()

    # -- queries ----------------------------------------------------------------------------------

    def ids(self, path: str | None = None) -> list[str]:
        """Webhook ids of every arrival (optionally only on ``path``), in arrival order."""
        with self._lock:
            return [a.webhook_id for a in self.arrivals if path is None or a.path == path]

    def snapshot(self) -> list[Arrival]:
        """A copy of the arrivals so far."""
        with self._lock:
            return list(self.arrivals)

    def wait_for(self, count: int, timeout: float, *, unique: bool = True, path: str | None = None) -> bool:
        """Wait until ``count`` (unique) ids arrived; returns whether they did in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.ids(path)
            if (len(set(ids)) if unique else len(ids)) >= count:
                return True
            time.sleep(0.02)
        return False


class BackgroundServer:
    """An aiohttp application served on 127.0.0.1 from a daemon thread with its own event loop."""

    def __init__(self, app: Callable[[], web.Application], name: str) -> None:
        self._app = app
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, port: int = 0) -> int:
        """Start serving; returns the bound port once it listens."""
        ready = threading.Event()
        bound: list[int] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
            loop.run_until_complete(site.start())
            bound.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self._name} did not start")
        return bound[0]

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def main() -> None:
    """Serve a receiver in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--secret", default=None, help="whsec_ secret to verify signatures with")
    args = parser.parse_args()
    receiver = Receiver(args.secret, record_bodies=False)
    print(json.dumps({"listening": f"http://127.0.0.1:{args.port}"}), flush=True)
    web.run_app(receiver.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
