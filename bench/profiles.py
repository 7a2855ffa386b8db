"""The worker settings each scenario runs with, and why.

``UNPACED`` is the project's own fast profile (``tests/conftest.py``): a rate
far above what one process delivers, so the rate never limits. ``PACED`` is
the shipped pacing (100 per 0.5 s, 200/s, 8 per host).
"""

from __future__ import annotations

from collections.abc import Mapping

Profile = Mapping[str, object]

UNPACED: Profile = {
    "CALLBACK_BATCH_SIZE": 500,
    "CALLBACK_MIN_INTERVAL": 0.05,
    "CALLBACK_RATE": 10_000,
    "CALLBACK_HOST_CONCURRENCY": 64,
}
PACED: Profile = {
    "CALLBACK_BATCH_SIZE": 100,
    "CALLBACK_MIN_INTERVAL": 0.5,
    "CALLBACK_RATE": 200,
    "CALLBACK_HOST_CONCURRENCY": 8,
}


def describe(profile: Profile) -> str:
    """``NAME=value`` pairs of a profile."""
    return ", ".join(f"{name}={value}" for name, value in profile.items())
