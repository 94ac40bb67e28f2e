"""Per-client connection and rate limits, as Postfix's anvil(8) keeps them.

Input: events of one smtpd service — a connection opened or closed, a MAIL
FROM, a RCPT TO, an AUTH — each with the client address and the time (the
caller passes the clock's ``seconds()``; nothing here reads a clock).
Output: the count or rate the event makes, which the SMTP server compares
with ``smtpd_client_connection_count_limit``,
``smtpd_client_connection_rate_limit``, ``smtpd_client_message_rate_limit``,
``smtpd_client_recipient_rate_limit`` and ``smtpd_client_auth_rate_limit``.

Rates count events in a fixed window of ``anvil_rate_time_unit`` seconds that
starts with a client's first event, as anvil does.  Memory is bounded: a
client's entry is dropped when it has no connection open and its window has
passed (swept every so often), and at most ``max_clients`` entries are kept.

With a :class:`SharedCounter` (``anvil_rate_map``, :mod:`mta.redisrates`)
every rate event is also counted fleet-wide in windows aligned to the time
unit, and the larger of the local and the fleet's count is the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Rate = Literal["connection", "message", "recipient", "auth"]


class SharedCounter(Protocol):
    """A count shared by the nodes of a fleet (answers at once)."""

    def bump(self, key: str, window: int, ttl: float) -> int: ...


@dataclass
class _Client:
    connections: int = 0
    window_start: float = 0.0
    rates: dict[str, int] = field(default_factory=dict)


class Anvil:
    """The counters of one smtpd service, kept in memory across reloads."""

    def __init__(self, time_unit: float = 60.0, max_clients: int = 100_000) -> None:
        self.time_unit = time_unit
        self.max_clients = max_clients
        self._clients: dict[str, _Client] = {}
        self._next_sweep = 0.0
        self.shared: SharedCounter | None = None

    def connect(self, addr: str, now: float) -> tuple[int, int]:
        """A connection opened: (concurrent connections, connection rate)."""
        client = self._client(addr, now)
        client.connections += 1
        return client.connections, self._shared(addr, "connection", now, client)

    def disconnect(self, addr: str) -> None:
        client = self._clients.get(addr)
        if client is not None and client.connections > 0:
            client.connections -= 1

    def event(self, addr: str, kind: Rate, now: float) -> int:
        """A MAIL, RCPT or AUTH: its rate in the current window."""
        return self._shared(addr, kind, now, self._client(addr, now))

    def connections(self, addr: str) -> int:
        client = self._clients.get(addr)
        return client.connections if client else 0

    def __len__(self) -> int:
        return len(self._clients)

    def _client(self, addr: str, now: float) -> _Client:
        if now >= self._next_sweep or len(self._clients) >= self.max_clients:
            self._sweep(now)
        client = self._clients.get(addr)
        if client is None:
            client = self._clients[addr] = _Client(window_start=now)
        return client

    def _shared(self, addr: str, kind: str, now: float, client: _Client) -> int:
        local = self._bump(client, kind, now)
        if self.shared is None:
            return local
        fleet = self.shared.bump(f"{kind}:{addr}", int(now // self.time_unit), self.time_unit)
        return max(local, fleet)

    def _bump(self, client: _Client, kind: str, now: float) -> int:
        if now - client.window_start >= self.time_unit:
            client.window_start = now
            client.rates.clear()
        client.rates[kind] = client.rates.get(kind, 0) + 1
        return client.rates[kind]

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.time_unit
        stale = [
            addr
            for addr, c in self._clients.items()
            if c.connections == 0 and now - c.window_start >= self.time_unit
        ]
        for addr in stale:
            del self._clients[addr]
        if len(self._clients) >= self.max_clients:
            # Under a flood of distinct addresses keep the connected ones.
            idle = [a for a, c in self._clients.items() if c.connections == 0]
            for addr in idle[: len(idle) // 2 + 1]:
                del self._clients[addr]
