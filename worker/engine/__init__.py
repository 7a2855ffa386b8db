"""Delivery engine: the leader that paces and delivers a queue, and what decides each attempt's outcome.

- ``leader``: one leadership term (lifecycle, dispatch at the global pace, lease renewal,
  run-time reconfiguration), coordinating the parts below; ``term``: a leader wired to its connections;
- ``intake``: entries read into the per-host queues, overflow deferred;
- ``settler``: outcomes gathered and written in one ``settle.lua`` call, with retry;
- ``housekeeping``: due retries back, silent consumers' entries reclaimed, the queue sampled;
- ``attempt``: an attempt's result -> decision -> status updates and settle record
  (the leader and immediate delivery both go through it);
- ``hosts``: per-host queues, concurrency caps and fair shares;
- ``immediate``: one callback delivered now, without the stream;
- ``observer``: the hooks metrics plug into; ``backoff``: the loops' wait after a Redis failure.
"""
