"""Test tooling shared by the tests, ``make bench`` and ``make demo``; not installed with the worker.

- ``receiver``: a local aiohttp webhook receiver that verifies signatures and records arrivals.
"""
