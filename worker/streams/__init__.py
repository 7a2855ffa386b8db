"""Redis Streams queue code: the callback stream, delayed retries, dead letters, lease and pace."""
