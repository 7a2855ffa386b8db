"""Persistence: the worker's tables, their migrations and the coalescing status writer.

- :mod:`.models` the SQLAlchemy models; :mod:`.rules` how their columns merge and what they accept;
- :mod:`.merge` pure coalescing of status updates; :mod:`.sql` the same rules as SQL;
  :mod:`.apply` one statement (PostgreSQL) or one transaction (SQLite) per flush;
- :mod:`.entries` and :mod:`.writer` the :class:`~.writer.StatusWriter` that reads the status stream;
- :mod:`.service` the lease and the loop the ``write_statuses`` actor runs;
- :mod:`.engine` engines from ``DATABASE_URL``; :mod:`.migrate` Alembic, also ``python -m worker.storage migrate``.
"""
