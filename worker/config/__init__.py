"""Configuration: the frozen :class:`Settings` read once from the environment, and run-time overrides.

- ``settings``: the :class:`Settings` object and :meth:`Settings.from_env`;
- ``variables``: every environment variable, its parser, default and what it allows;
- ``runtime``: overrides stored in Redis (``python -m ops config``), validated like the environment.
"""
