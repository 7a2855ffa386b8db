"""Benchmarks and the demo of the callback worker.

``python -m bench`` (``make bench``) measures throughput, latency, pacing,
enqueue rate and Redis commands per callback against baselines and writes
``BENCHMARKS.md``; ``python -m bench.demo`` (``make demo``) shows a worker
delivering a few thousand callbacks. Both start private servers and real
worker processes, and stop everything they started.
"""
