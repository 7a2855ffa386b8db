"""The Redis side, and the only code that speaks the Redis protocol or parses its replies.

- ``keys``: every key name (layout documented there); ``client``: connections with chosen timeouts;
- ``lua/``: every script, each with a KEYS/ARGV header; ``scripts``: loads them;
- ``entry``: the callback entry codec; ``status``: the status-update codec (encode and decode);
- ``settlement``: the arguments of one ``settle.lua`` call (pure);
- ``stream``: the queue protocol (read, reclaim, settle, promote, replay), async and sync;
- ``lease``: the fenced lease of the leader and of the status writer; ``pace``: the global GCRA.
"""
