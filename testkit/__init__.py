"""Test tooling shared by the tests, ``make bench`` and ``make demo``; not installed with the worker.

- ``receiver``: a local aiohttp webhook receiver that verifies signatures and records arrivals.
- ``servers``: servers a test owns, e.g. a private ``redis-server`` with an append-only file.
- ``chaos``: the accounting of a chaos run (what each fault held, which callbacks it put at risk).
"""
