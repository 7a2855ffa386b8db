"""Alembic migrations of the worker's tables; run them with ``python -m worker.storage migrate``."""
