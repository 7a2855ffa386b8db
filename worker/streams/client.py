"""Redis connections with timeouts chosen on purpose.

redis-py 8 defaults to a 5 s socket timeout and ten silent retries: a blocking
read longer than the timeout then hangs and retries, and a retried XREADGROUP
or XADD can lose or duplicate entries. The worker sets its own timeouts and
handles reconnection itself (the leader loop backs off and goes on).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# A cluster client's own failures (no reachable node, slots not covered) are not RedisErrors in redis-py.
CLUSTER_ERRORS: tuple[type[Exception], ...] = (redis.exceptions.RedisClusterException,)

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 10.0

# What a Redis call may raise besides the project's own errors: Redis unreachable, a timeout,
# an error reply no operation converts. Callers retry later (the leader's and the writer's loops).
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError, *CLUSTER_ERRORS)


def _options(retries: int) -> dict[str, object]:
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


def sync_client(url: str, *, retries: int = 2) -> Any:
    """A blocking client (producer, operators, watchdog, status writer): a ``RedisCluster`` on a cluster node.

    A retried XADD may enqueue a callback twice; both copies carry the same
    ``webhook-id``, which is what receivers deduplicate on.
    """
    if is_cluster_node(url):
        return redis.RedisCluster.from_url(url, **_cluster_options(retries))
    return redis.Redis.from_url(url, **_options(retries))  # type: ignore[arg-type]


def async_client(url: str) -> Any:
    """An asyncio client for the leader: no automatic retries, the loop retries itself.

    Replies are decoded to ``str`` by the parser (hiredis, in C), not field by field in Python.
    Bytes that are not UTF-8 become lone surrogates instead of failing the whole reply (a
    strict decode would fail a read after Redis had already delivered every entry of it);
    the entry decoder then sets such an entry aside. On a cluster node, a ``RedisCluster``.
    """
    decoding = {"decode_responses": True, "encoding_errors": "surrogateescape"}
    if is_cluster_node(url):
        return aioredis.RedisCluster.from_url(url, **_cluster_options(0), **decoding)
    return aioredis.Redis.from_url(url, **_options(0), **decoding)  # type: ignore[arg-type]


def _cluster_options(retries: int) -> dict[str, Any]:
    # A cluster client follows MOVED/ASK itself and refreshes its slot map on a node's failure;
    # retries beyond that stay the callers' (as for a single Redis).
    options: dict[str, Any] = {**_options(retries)}
    options.pop("retry_on_error")
    options.pop("health_check_interval")
    return options


_MODES: dict[str, bool] = {}  # URL -> whether it is a cluster node: a server does not change mode while it runs


def is_cluster_node(url: str) -> bool | None:
    """Whether ``url`` names a node of a Redis Cluster (``INFO cluster``); ``None`` when Redis does not answer.

    Asked once per URL and process; an unanswered question is asked again next time.
    """
    if url not in _MODES:
        answer = _ask_cluster(url)
        if answer is None:
            return None
        _MODES[url] = answer
    return _MODES[url]


def _ask_cluster(url: str) -> bool | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT)
    try:
        info: Any = client.info("cluster")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return bool(int(info.get("cluster_enabled", 0)))


def text(value: Any) -> str:
    """A Redis reply value as ``str`` (clients without ``decode_responses`` answer bytes; not UTF-8: U+FFFD)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def texts(raw: Any) -> dict[str, str]:
    """A Redis hash or stream entry's fields as ``str`` keys and values (``{}`` for none)."""
    return {text(k): text(v) for k, v in (raw or {}).items()}
