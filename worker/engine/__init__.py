"""Delivery engine: the leader that paces and delivers a queue, and what decides each attempt's outcome.

- ``leader``: one leadership term (intake, dispatch, housekeeping, lease renewal);
- ``settler``: outcomes gathered and written in one ``settle.lua`` call;
- ``attempt``: an attempt's result -> decision -> status updates and settle record
  (the leader and immediate delivery both go through it);
- ``hosts``: per-host queues, concurrency caps and fair shares;
- ``immediate``: one callback delivered now, without the stream;
- ``observer``: the hooks metrics plug into; ``term``: a leader wired to its connections.
"""
