"""The Redis side, and the only code that speaks the Redis protocol or parses its replies.

- ``keys``: every key name (layout documented there); ``client``: connections with chosen timeouts;
- ``protocol``: operations are generators of commands and scripts (sans-IO); a sync and an async
  driver run them, and turn Redis error replies into the project's errors (``StreamGone``, ``LeaseLost``);
- ``groups``: consumer-group operations of any stream (create, read, the XAUTOCLAIM loop, pending);
- ``queue``: the callback queue's operations (each KEYS list once); ``snapshot``: its sizes and ages
  for metrics and ``ops status``; ``stream``: its two fronts,
  ``CallbackStream`` (the leader's, async) and ``SyncCallbackStream`` (ops');
- ``status_stream``: the status writer's stream; ``status``: the status-update codec (encode, decode);
- ``entry``: the callback entry codec (a record that is not a callback decodes to ``Malformed``);
- ``settlement``: the arguments of one ``settle.lua`` call (pure);
- ``lease``: the one fenced lease (leader and status writer); ``pace``: the global GCRA;
- ``lua/``: every script, each with a KEYS/ARGV header; ``scripts``: loads them.
"""
