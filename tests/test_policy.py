"""Delivery policy, table-tested: classification, Retry-After, backoff and the next step."""

from __future__ import annotations

import email.utils

import pytest

from worker.delivery.policy import Action, Decision, Verdict, classify, compute_backoff, decide, parse_retry_after

# (status, transport error kind, verdict)
CLASSIFY: list[tuple[int | None, str | None, Verdict]] = [
    (200, None, Verdict.DELIVERED),
    (201, None, Verdict.DELIVERED),
    (202, None, Verdict.DELIVERED),
    (204, None, Verdict.DELIVERED),
    (299, None, Verdict.DELIVERED),
    (408, None, Verdict.RETRY),
    (429, None, Verdict.RETRY),
    (500, None, Verdict.RETRY),
    (502, None, Verdict.RETRY),
    (503, None, Verdict.RETRY),
    (504, None, Verdict.RETRY),
    (599, None, Verdict.RETRY),
    (100, None, Verdict.FINAL),
    (301, None, Verdict.FINAL),  # redirects are never followed
    (302, None, Verdict.FINAL),
    (307, None, Verdict.FINAL),
    (400, None, Verdict.FINAL),
    (401, None, Verdict.FINAL),
    (403, None, Verdict.FINAL),
    (404, None, Verdict.FINAL),
    (409, None, Verdict.FINAL),
    (410, None, Verdict.FINAL),
    (422, None, Verdict.FINAL),
    (600, None, Verdict.FINAL),
    (None, "timeout", Verdict.RETRY),
    (None, "connect", Verdict.RETRY),
    (None, "network", Verdict.RETRY),
    (None, "protocol", Verdict.RETRY),
    (None, None, Verdict.RETRY),
    (None, "something-new", Verdict.RETRY),  # an unknown failure is worth another try
    (None, "blocked", Verdict.FINAL),  # the SSRF guard: waiting does not make the address allowed
    (None, "invalid_url", Verdict.FINAL),
    (500, "blocked", Verdict.RETRY),  # a status, when there is one, decides
]


@pytest.mark.parametrize(("status", "error", "verdict"), CLASSIFY)
def test_classify(status, error, verdict):
    assert classify(status, error) is verdict


NOW = 1_445_412_450.0  # Wed, 21 Oct 2015 07:27:30 GMT

# (Retry-After header, seconds to wait or None)
RETRY_AFTER: list[tuple[str | None, float | None]] = [
    ("120", 120.0),
    ("0", 0.0),
    (" 7 ", 7.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
    ("Wed, 21 Oct 2015 09:28:00 +0200", 30.0),
    ("Wed, 21 Oct 2015 07:27:30 GMT", 0.0),
    ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: no wait, never negative
    ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: ambiguous
    (None, None),
    ("", None),
    ("soon", None),
    ("-5", None),
    ("1.5", None),
    ("1e3", None),
    ("\u00b2", None),  # superscript two: a digit to str.isdigit(), not to float()
    ("\u0663", None),  # Arabic-Indic three: delta-seconds are ASCII digits
    ("Thu, 32 Oct 2015 07:28:00 GMT", None),
]


@pytest.mark.parametrize(("value", "seconds"), RETRY_AFTER)
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value, NOW) == seconds


def test_parse_retry_after_of_an_http_date_is_relative_to_now():
    when = NOW + 3600
    header = email.utils.formatdate(when, usegmt=True)
    assert parse_retry_after(header, NOW) == pytest.approx(3600.0)
    assert parse_retry_after(header, NOW + 600) == pytest.approx(3000.0)


SCHEDULE = (5.0, 30.0, 120.0)

# (attempts made, rand(), jitter, seconds)
BACKOFF: list[tuple[int, float, float, float]] = [
    (1, 0.0, 0.2, 5.0),
    (1, 1.0, 0.2, 6.0),
    (1, 0.5, 0.2, 5.5),
    (2, 0.0, 0.2, 30.0),
    (2, 1.0, 0.2, 36.0),
    (3, 0.0, 0.2, 120.0),
    (3, 1.0, 0.2, 144.0),
    (4, 0.0, 0.2, 120.0),  # the last entry repeats
    (50, 1.0, 0.2, 144.0),
    (2, 1.0, 0.0, 30.0),  # no jitter
    (2, 1.0, 1.0, 60.0),
]


@pytest.mark.parametrize(("attempts", "rand", "jitter", "seconds"), BACKOFF)
def test_compute_backoff(attempts, rand, jitter, seconds):
    assert compute_backoff(attempts, SCHEDULE, jitter=jitter, rand=lambda: rand) == pytest.approx(seconds)


@pytest.mark.parametrize("attempts", [0, -1])
def test_compute_backoff_needs_at_least_one_attempt(attempts):
    with pytest.raises(ValueError, match="attempts_made starts at 1"):
        compute_backoff(attempts, SCHEDULE, rand=lambda: 0.0)


def test_compute_backoff_stays_within_the_jitter_band_with_the_real_random_source():
    for attempts in range(1, 10):
        base = SCHEDULE[min(attempts, len(SCHEDULE)) - 1]
        assert base <= compute_backoff(attempts, SCHEDULE) <= base * 1.2


# decide(): (keyword arguments, expected decision); schedule (5, 30, 120), rand() = 0 unless given
DECIDE: list[tuple[dict[str, object], Decision]] = [
    ({"status": 200, "attempts_made": 1}, Decision(Action.DELIVERED)),
    ({"status": 204, "attempts_made": 7}, Decision(Action.DELIVERED)),  # a success on the last attempt still counts
    ({"status": 404, "attempts_made": 1}, Decision(Action.DEAD, reason="final: HTTP 404")),
    ({"status": 410, "attempts_made": 2}, Decision(Action.DEAD, reason="final: HTTP 410")),
    ({"status": 302, "attempts_made": 1}, Decision(Action.DEAD, reason="final: HTTP 302")),
    ({"status": None, "error": "blocked", "attempts_made": 1}, Decision(Action.DEAD, reason="final: blocked")),
    ({"status": 500, "attempts_made": 1}, Decision(Action.RETRY, delay=5.0, reason="HTTP 500")),
    ({"status": 503, "attempts_made": 2}, Decision(Action.RETRY, delay=30.0, reason="HTTP 503")),
    ({"status": None, "error": "timeout", "attempts_made": 3}, Decision(Action.RETRY, delay=120.0, reason="timeout")),
    ({"status": None, "error": "connect", "attempts_made": 5}, Decision(Action.RETRY, delay=120.0, reason="connect")),
    ({"status": None, "error": None, "attempts_made": 1}, Decision(Action.RETRY, delay=5.0, reason="error")),
    ({"status": 500, "attempts_made": 1, "rand": 1.0}, Decision(Action.RETRY, delay=6.0, reason="HTTP 500")),
    # Exhausted after max_attempts (7).
    ({"status": 503, "attempts_made": 7}, Decision(Action.DEAD, reason="exhausted: 7 attempts, last HTTP 503")),
    (
        {"status": None, "error": "timeout", "attempts_made": 7},
        Decision(Action.DEAD, reason="exhausted: 7 attempts, last timeout"),
    ),
    ({"status": 500, "attempts_made": 9}, Decision(Action.DEAD, reason="exhausted: 9 attempts, last HTTP 500")),
    (
        {"status": 429, "attempts_made": 1, "max_attempts": 1},
        Decision(Action.DEAD, reason="exhausted: 1 attempts, last HTTP 429"),
    ),
    ({"status": 404, "attempts_made": 7}, Decision(Action.DEAD, reason="final: HTTP 404")),  # final beats exhausted
    # Retry-After: a longer wait than the backoff wins, capped at retry_after_max.
    ({"status": 429, "attempts_made": 1, "retry_after": 100.0}, Decision(Action.RETRY, delay=100.0, reason="HTTP 429")),
    (
        {"status": 503, "attempts_made": 1, "retry_after": 10_000.0},
        Decision(Action.RETRY, delay=3600.0, reason="HTTP 503"),
    ),
    (
        {"status": 503, "attempts_made": 1, "retry_after": 10_000.0, "retry_after_max": 60.0},
        Decision(Action.RETRY, delay=60.0, reason="HTTP 503"),
    ),
    (
        {"status": 503, "attempts_made": 1, "retry_after": float("inf")},
        Decision(Action.RETRY, delay=3600.0, reason="HTTP 503"),
    ),
    # A shorter Retry-After does not shorten the backoff, and neither does a cap below it.
    ({"status": 429, "attempts_made": 2, "retry_after": 1.0}, Decision(Action.RETRY, delay=30.0, reason="HTTP 429")),
    ({"status": 429, "attempts_made": 2, "retry_after": 0.0}, Decision(Action.RETRY, delay=30.0, reason="HTTP 429")),
    (
        {"status": 429, "attempts_made": 2, "retry_after": 1000.0, "retry_after_max": 10.0},
        Decision(Action.RETRY, delay=30.0, reason="HTTP 429"),
    ),
    # Retry-After never revives a callback that is out of attempts or finally refused.
    (
        {"status": 429, "attempts_made": 7, "retry_after": 5.0},
        Decision(Action.DEAD, reason="exhausted: 7 attempts, last HTTP 429"),
    ),
    ({"status": 400, "attempts_made": 1, "retry_after": 5.0}, Decision(Action.DEAD, reason="final: HTTP 400")),
]


@pytest.mark.parametrize(("given", "expected"), DECIDE)
def test_decide(given, expected):
    arguments: dict[str, object] = {
        "status": None,
        "error": None,
        "max_attempts": 7,
        "schedule": SCHEDULE,
        **{key: value for key, value in given.items() if key != "rand"},
    }
    rand = float(given.get("rand", 0.0))  # type: ignore[arg-type]
    decision = decide(**arguments, rand=lambda: rand)  # type: ignore[arg-type]
    assert decision.action is expected.action
    assert decision.delay == pytest.approx(expected.delay)
    assert decision.reason == expected.reason


def test_decide_with_a_parsed_retry_after_header():
    retry_after = parse_retry_after("Wed, 21 Oct 2015 07:37:30 GMT", NOW)  # ten minutes
    decision = decide(
        status=503, error=None, attempts_made=1, max_attempts=3, schedule=SCHEDULE, retry_after=retry_after
    )
    assert decision == Decision(Action.RETRY, delay=600.0, reason="HTTP 503")
