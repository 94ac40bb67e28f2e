"""Statistics: counters kept in memory, and (later) the HTTP service."""
