"""Per-host fairness: a cap per host, round-robin across hosts, and no host ever blocks another."""

from __future__ import annotations

import itertools

import pytest

from worker.engine.hosts import HostQueues, host_of
from worker.streams.entry import CallbackEntry

_ids = itertools.count(1)


def entry(url: str, *, stream_id: str | None = "auto") -> CallbackEntry:
    n = next(_ids)
    return CallbackEntry(f"msg_{n}", url, "{}", stream_id=f"{n}-0" if stream_id == "auto" else stream_id)


def take_all(queues: HostQueues) -> list[CallbackEntry]:
    taken = []
    while (next_entry := queues.take()) is not None:
        taken.append(next_entry)
    return taken


def hosts(entries: list[CallbackEntry]) -> list[str]:
    return [host_of(e.url) for e in entries]


HOST_OF: list[tuple[str, str]] = [
    ("http://example.com/hook", "example.com:80"),
    ("https://example.com/hook", "example.com:443"),
    ("https://example.com", "example.com:443"),
    ("http://example.com:8080/hook", "example.com:8080"),
    ("https://example.com:8443/", "example.com:8443"),
    ("http://example.com:443/", "example.com:443"),
    ("http://Example.COM/Hook", "example.com:80"),
    ("HTTPS://EXAMPLE.COM/", "example.com:443"),
    ("http://user@example.com:81/", "example.com:81"),
    ("http://127.0.0.1:9000/ok", "127.0.0.1:9000"),
    ("http://[::1]:8080/", "::1:8080"),
    ("https://[2606:4700:4700::1111]/", "2606:4700:4700::1111:443"),
]


@pytest.mark.parametrize(("url", "expected"), HOST_OF)
def test_host_of(url, expected):
    assert host_of(url) == expected


def test_the_same_host_in_another_case_or_with_its_default_port_shares_one_cap():
    queues = HostQueues(concurrency=1, buffer=10)
    for url in ("http://A.example/x", "http://a.example:80/y", "HTTP://a.EXAMPLE/z"):
        assert queues.offer(entry(url))
    assert queues.take() is not None
    assert queues.take() is None
    assert queues.startable() == 0
    assert queues.waiting == 2


def test_another_port_is_another_host():
    queues = HostQueues(concurrency=1, buffer=10)
    queues.offer(entry("http://a.example/"))
    queues.offer(entry("http://a.example:8080/"))
    queues.offer(entry("https://a.example/"))
    assert sorted(hosts(take_all(queues))) == ["a.example:443", "a.example:80", "a.example:8080"]


@pytest.mark.parametrize("concurrency", [1, 2, 5])
def test_per_host_cap(concurrency):
    queues = HostQueues(concurrency=concurrency, buffer=100)
    offered = [entry("https://a.example/hook") for _ in range(8)]
    for e in offered:
        assert queues.offer(e)
    assert queues.startable() == concurrency
    taken = take_all(queues)
    assert taken == offered[:concurrency]  # first in, first out within a host
    assert (queues.in_flight, queues.waiting) == (concurrency, 8 - concurrency)
    assert queues.saturated_hosts() == 1
    assert queues.startable() == 0


def test_round_robin_across_hosts():
    queues = HostQueues(concurrency=100, buffer=100)
    for n in range(3):
        for host in ("a", "b", "c"):
            queues.offer(entry(f"https://{host}.example/{n}"))
    assert [h.split(".")[0] for h in hosts(take_all(queues))] == ["a", "b", "c"] * 3


def test_round_robin_with_uneven_queues():
    queues = HostQueues(concurrency=100, buffer=100)
    for host, count in (("a", 4), ("b", 1), ("c", 2)):
        for n in range(count):
            queues.offer(entry(f"https://{host}.example/{n}"))
    assert [h.split(".")[0] for h in hosts(take_all(queues))] == ["a", "b", "c", "a", "c", "a", "a"]


def test_a_saturated_host_never_blocks_the_others():
    queues = HostQueues(concurrency=1, buffer=100)
    for _ in range(10):
        queues.offer(entry("https://slow.example/"))
    late = [entry("https://fast.example/1"), entry("https://fast.example/2"), entry("https://other.example/")]
    for e in late:
        queues.offer(e)
    first = queues.take()
    assert first is not None
    assert host_of(first.url) == "slow.example:443"
    # slow.example is saturated; the others still start, and they started behind nine waiting slow ones.
    assert queues.startable() == 2
    after = take_all(queues)
    assert sorted(hosts(after)) == ["fast.example:443", "other.example:443"]
    assert queues.saturated_hosts() == 3
    # fast.example's second entry starts as soon as its first one is done.
    queues.done(next(e for e in after if e.url.startswith("https://fast.example")))
    assert queues.take() is late[1]
    assert queues.waiting == 9


def test_done_frees_a_slot_for_the_same_host():
    queues = HostQueues(concurrency=2, buffer=100)
    offered = [entry("https://a.example/") for _ in range(5)]
    for e in offered:
        queues.offer(e)
    first, second = take_all(queues)
    assert queues.take() is None
    queues.done(first)
    assert (queues.in_flight, queues.startable()) == (1, 1)
    assert queues.take() is offered[2]
    assert queues.take() is None
    queues.done(second)
    queues.done(offered[2])
    assert (queues.in_flight, queues.saturated_hosts()) == (0, 0)
    assert take_all(queues) == offered[3:]


def test_a_saturated_host_with_a_full_buffer_refuses_without_affecting_other_hosts():
    queues = HostQueues(concurrency=1, buffer=2)
    in_flight = entry("https://a.example/0")
    queues.offer(in_flight)
    assert queues.take() is in_flight  # a.example is now saturated
    accepted = [entry("https://a.example/1"), entry("https://a.example/2")]
    for e in accepted:
        assert queues.offer(e) is True
    overflow = entry("https://a.example/3")
    assert queues.offer(overflow) is False
    assert not queues.holds(overflow.stream_id)
    assert queues.waiting == 2
    assert queues.offer(entry("https://b.example/1")) is True
    # A finished delivery frees the host: it is no longer saturated and takes more.
    queues.done(in_flight)
    assert queues.offer(overflow) is True
    assert queues.holds(overflow.stream_id)


def test_a_host_only_waiting_for_the_global_pace_may_use_the_whole_buffer():
    queues = HostQueues(concurrency=4, buffer=2)
    offered = [entry("https://a.example/") for _ in range(50)]
    assert all(queues.offer(e) for e in offered)
    assert queues.shed() == []  # not saturated: nothing to shed
    assert queues.waiting == 50


def test_a_lone_saturated_host_may_keep_the_whole_buffer():
    queues = HostQueues(concurrency=2, buffer=50, min_share=4)
    offered = [entry("https://busy.example/") for _ in range(50)]
    assert all(queues.offer(e) for e in offered)
    take_all(queues)  # two in flight: saturated, but alone
    assert queues.shed() == []
    assert queues.waiting == 48


def test_shed_returns_a_saturated_hosts_overflow_beyond_its_fair_share_newest_first():
    queues = HostQueues(concurrency=1, buffer=4)  # two hosts with waiting work: a share of 2 each
    offered = [entry("https://slow.example/") for _ in range(6)]
    for e in offered:
        queues.offer(e)
    other = entry("https://fast.example/")
    queues.offer(other)
    assert queues.take() is offered[0]  # slow.example saturated, 5 waiting
    shed = queues.shed()
    assert shed == [offered[5], offered[4], offered[3]]
    assert not any(queues.holds(e.stream_id) for e in shed)
    assert queues.waiting == 3  # two of slow.example, one of fast.example
    assert queues.take() is other


def test_shed_returns_entries_that_waited_too_long():
    queues = HostQueues(concurrency=1, buffer=10, max_wait=5.0)
    old, young = entry("https://a.example/"), entry("https://b.example/")
    queues.offer(old, now=100.0)
    queues.offer(young, now=104.0)
    assert queues.shed(now=104.9) == []
    assert queues.shed(now=105.0) == [old]
    assert queues.waiting == 1 and queues.holds(young.stream_id) and not queues.holds(old.stream_id)


def test_holds_tracks_an_entry_from_offer_to_done():
    queues = HostQueues(concurrency=4, buffer=10)
    e = entry("https://a.example/")
    assert not queues.holds(e.stream_id)
    queues.offer(e)
    assert queues.holds(e.stream_id)
    assert queues.take() is e
    assert queues.holds(e.stream_id)  # in flight is still held
    queues.done(e)
    assert not queues.holds(e.stream_id)
    assert not queues.holds(None)


def test_an_entry_without_a_stream_id_is_held_by_its_callback_id():
    queues = HostQueues(concurrency=4, buffer=10)
    e = entry("https://a.example/", stream_id=None)
    queues.offer(e)
    assert queues.holds(e.callback_id)
    queues.done(queues.take())  # type: ignore[arg-type]
    assert not queues.holds(e.callback_id)


def test_drain_returns_the_waiting_entries_and_keeps_the_ones_in_flight():
    queues = HostQueues(concurrency=1, buffer=10)
    a = [entry("https://a.example/") for _ in range(3)]
    b = [entry("https://b.example/") for _ in range(2)]
    for e in a + b:
        queues.offer(e)
    started = take_all(queues)
    assert started == [a[0], b[0]]
    drained = queues.drain()
    assert sorted(e.callback_id for e in drained) == sorted(e.callback_id for e in (a[1], a[2], b[1]))
    assert (queues.waiting, queues.in_flight) == (0, 2)
    assert queues.startable() == 0
    assert queues.take() is None
    assert not any(queues.holds(e.stream_id) for e in drained)
    assert all(queues.holds(e.stream_id) for e in started)
    # Draining again is harmless; finished entries free their slots as usual.
    assert queues.drain() == []
    for e in started:
        queues.done(e)
    assert queues.in_flight == 0
    assert queues.offer(a[1])
    assert queues.take() is a[1]


def test_counters_follow_every_operation():
    queues = HostQueues(concurrency=2, buffer=3)
    for n in range(4):
        queues.offer(entry(f"https://h{n % 2}.example/"))
    assert (queues.waiting, queues.in_flight, queues.startable()) == (4, 0, 4)
    taken = take_all(queues)
    assert (queues.waiting, queues.in_flight, queues.startable()) == (0, 4, 0)
    assert queues.saturated_hosts() == 2
    for e in taken:
        queues.done(e)
    assert (queues.waiting, queues.in_flight, queues.saturated_hosts()) == (0, 0, 0)
