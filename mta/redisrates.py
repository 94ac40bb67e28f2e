"""Fleet-wide client rates: anvil's per-client counters added up in Redis.

Job: let ``smtpd_client_{connection,message,recipient,auth}_rate_limit``
count a client's events on every node of a fleet, when
``anvil_rate_map = redis:/etc/mta/redis.cf`` names a shared store.

Input: one event (``kind:address``), the time window it falls in and the
window length, from :class:`mta.anvil.Anvil`.  Output: the fleet's count
for that key as last known, at once — never a wait.

Each event is an ``INCR <key_prefix>anvil:<kind>:<address>:<window>``
sent in the background (windows are aligned to multiples of
``anvil_rate_time_unit``, so all nodes count in the same window; the key
expires two windows later).  The answer updates what the node knows; the
count returned for an event is that knowledge plus the events whose
answer is still on its way, so a burst on one node is not undercounted.
Other nodes' events reach a node's count with its next answer from Redis:
a limit holds across the fleet to within the events other nodes took since
this node's previous event for the same client (never waiting is the price).
When Redis is unavailable (:mod:`mta.redisclient` logs it and backs off)
the increments are skipped and anvil's own local counts decide.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from mta.redisclient import RedisClient, RedisUnavailable


class SharedRates:
    """Fleet-wide event counts per (key, window), without waiting."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._window = -1
        self._known: dict[str, int] = {}
        self._pending: dict[str, int] = {}

    def bump(self, key: str, window: int, ttl: float) -> int:
        """Count one event; the fleet's count including it, as known now."""
        if window != self._window:  # a new window: forget the old one's keys
            self._window = window
            self._known.clear()
            self._pending.clear()
        rkey = f"{self.client.config.key_prefix}anvil:{key}:{window}"
        if not self.client.available:
            return self._known.get(rkey, 0)
        self._pending[rkey] = self._pending.get(rkey, 0) + 1
        estimate = self._known.get(rkey, 0) + self._pending[rkey]
        d = defer.Deferred.fromCoroutine(self._incr(rkey, window, ttl))
        d.addErrback(lambda f: None)  # the client has logged it
        return estimate

    async def _incr(self, rkey: str, window: int, ttl: float) -> None:
        try:
            value: Any = await self.client.execute("INCR", rkey)
            if value == 1:
                await self.client.execute("EXPIRE", rkey, max(1, int(2 * ttl)))
        except RedisUnavailable:
            value = None
        if window != self._window:
            return
        pending = self._pending.get(rkey, 0)
        if pending > 0:
            self._pending[rkey] = pending - 1
        if isinstance(value, int):
            self._known[rkey] = max(self._known.get(rkey, 0), value)

    def close(self) -> None:
        self.client.close()
