"""Make sure a Redis answers before the worker or the tests start.

If nothing answers at ``REDIS_URL`` and the variable was not set, start a
private ``redis-server`` from PATH under ``./var/`` on the default port;
otherwise say in one line what to do. Used by ``make run`` and ``make test``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

DEFAULT_URL = "redis://127.0.0.1:6379/0"
VAR = Path("var")


def answers(url: str) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except (redis.RedisError, OSError):
        return False


def ensure_redis() -> int:
    """Return 0 when Redis answers (starting a private one if allowed), 2 with a message otherwise."""
    url = os.environ.get("REDIS_URL", "")
    if answers(url or DEFAULT_URL):
        return 0
    if url:
        print(f"Redis does not answer at REDIS_URL={url}; start it or unset REDIS_URL.", file=sys.stderr)
        return 2
    server = shutil.which("redis-server")
    if server is None:
        print("No Redis at 127.0.0.1:6379 and no redis-server on PATH: apt-get install redis-server.", file=sys.stderr)
        return 2
    VAR.mkdir(exist_ok=True)
    subprocess.run(
        [
            server,
            "--port",
            "6379",
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            str(VAR.resolve()),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            "redis.log",
            "--pidfile",
            str((VAR / "redis.pid").resolve()),
        ],
        check=True,
    )
    for _ in range(50):
        if answers(DEFAULT_URL):
            print("started a private redis-server on 127.0.0.1:6379 (data under ./var/, nothing kept on disk)")
            return 0
        time.sleep(0.1)
    print("started redis-server but it does not answer; see var/redis.log", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(ensure_redis())
