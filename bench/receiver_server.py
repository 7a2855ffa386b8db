"""The project's receiver in a process of its own, plus one query the benchmarks need.

``GET /_times?path=/run/x`` returns the arrival times of every POST to that
path (``&count=1`` returns only the count), so a benchmark in another process
learns exactly when the last callback of a run arrived; ``GET /_answers?path=``
returns ``[time, status]`` of every answer to it (the adaptive benchmark's 429 share). Signatures are not
verified here: this receiver measures throughput, and verifying would make the
receiver, not the sender, the bottleneck.

Run: ``python -m bench.receiver_server --port 8080``.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from testkit.receiver import Receiver


def application(receiver: Receiver) -> web.Application:
    """The receiver's app with ``GET /_times`` added."""

    async def times(request: web.Request) -> web.Response:
        path = request.query.get("path", "")
        if request.query.get("count"):  # cheap: polled every few milliseconds during a run
            return web.json_response({"count": receiver.counts[path]})
        arrivals = [arrival.at for arrival in receiver.snapshot() if arrival.path == path]
        return web.json_response({"count": len(arrivals), "times": arrivals})

    async def answers(request: web.Request) -> web.Response:
        path = request.query.get("path", "")
        return web.json_response([[at, status] for at, answered, status in list(receiver.answers) if answered == path])

    app = receiver.app()
    app.router.add_get("/_times", times)
    app.router.add_get("/_answers", answers)
    return app


def main() -> None:
    """Serve in the foreground on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = application(Receiver(None, record_bodies=False))
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
