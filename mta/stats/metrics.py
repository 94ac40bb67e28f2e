"""``GET /metrics``: the snapshot in Prometheus' text exposition format.

Job: describe each figure of a :class:`~mta.stats.snapshot.Snapshot` as a
Prometheus metric family (name ``mta_<key>`` as INTERFACE.md says, a help text,
a unit where there is one) and encode them with ``prometheus_client``: the
classic text format 0.0.4, or OpenMetrics (which carries the units) when the
scraper asks for it in ``Accept``.

Input: a function that returns the current snapshot; the Accept header.
Output: the body and its Content-Type.

With ``stats_node_name`` set (a fleet sets it, e.g. to ``$myhostname``)
every sample carries a ``node`` label, so the nodes' series stay apart when
Prometheus aggregates over a job; empty (the default) leaves the series as
INTERFACE.md names them.

The counts since start (``mta_totals{kind=...}``, ``mta_rejects{reason=...}``) keep
the sample names of the contract (INTERFACE.md): they are exposed untyped rather than
as Prometheus counters, whose samples would have to be renamed ``..._total``;
``rate()`` works on them all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CollectorRegistry,
    GaugeMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from mta.stats.snapshot import Snapshot


class SnapshotCollector(Collector):
    """A prometheus_client collector that reads one snapshot per scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        for metric in self._families(s):
            if s.node:
                metric.samples = [
                    sample._replace(labels={"node": s.node, **sample.labels})
                    for sample in metric.samples
                ]
            yield metric

    def _families(self, s: Snapshot) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mta_mqueue_messages",
            "Number of messages in the mail queue (incoming, active, deferred, hold).",
            value=s.mqueue_messages,
        )
        yield GaugeMetricFamily(
            "mta_mqueue_kbytes",
            "Size of the mail queue in kilobytes (1024 bytes), as mailq counts it.",
            value=s.mqueue_kbytes,
            unit="kbytes",
        )
        yield GaugeMetricFamily(
            "mta_mqueue_bytes",
            "Size of the mail queue in bytes.",
            value=s.mqueue_bytes,
            unit="bytes",
        )
        yield GaugeMetricFamily(
            "mta_smtp_active_sessions",
            "Number of open inbound SMTP connections on all smtpd services.",
            value=s.smtp_active_sessions,
        )
        queue = GaugeMetricFamily(
            "mta_queue", "Number of messages in each queue state.", labels=["state"]
        )
        for state, n in s.queue.items():
            queue.add_metric([state], n)
        yield queue
        totals = UnknownMetricFamily(
            "mta_totals",
            "Messages accepted and rejected by the SMTP server, and recipients delivered,"
            " deferred and bounced by the queue manager, since the daemon started"
            " (counts: use rate()).",
            labels=["kind"],
        )
        for kind, n in s.totals.items():
            totals.add_metric([kind], n)
        yield totals
        rejects = UnknownMetricFamily(
            "mta_rejects",
            "SMTP rejects since the daemon started, by the restriction that decided"
            " (counts: use rate()).",
            labels=["reason"],
        )
        for reason, n in s.reject_reasons.items():
            rejects.add_metric([reason], n)
        yield rejects
        if s.disk_free_percent is not None:
            yield GaugeMetricFamily(
                "mta_disk_free_percent",
                "Free space of the queue file system in percent.",
                value=s.disk_free_percent,
                unit="percent",
            )
        yield GaugeMetricFamily(
            "mta_warnings",
            "Number of warnings the statistics page shows (disk space, corrupt queue).",
            value=len(s.warnings),
        )
        oldest = min((m.arrival_time for m in s.oldest_deferred), default=None)
        yield GaugeMetricFamily(
            "mta_oldest_deferred_age_seconds",
            "Age of the oldest deferred message in seconds (0 when none is deferred).",
            value=0 if oldest is None else max(0.0, s.time - oldest),
            unit="seconds",
        )
        yield GaugeMetricFamily(
            "mta_start_time_seconds",
            "Start time of the daemon, seconds since the Unix epoch.",
            value=s.started,
            unit="seconds",
        )


class Exposition:
    """The registry of one statistics service."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(snapshot))

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition body and its Content-Type for this Accept header."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
