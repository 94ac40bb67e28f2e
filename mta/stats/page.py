"""``GET /``: the statistics page that a person reads.

Job: render a snapshot as one self-contained HTML page — the appliance's three
counters (queue messages, queue kilobytes, active SMTP sessions) and the free
disk space up top, any warnings under them, then the queue by state, the totals
since start, the rejects by reason, the deferred mail by destination, the
oldest deferred messages with their reasons and the recent deliveries.  The
page reloads itself every ``REFRESH_SECONDS``; it needs no script, no external
file and no cookie.

Input: a Snapshot.  Output: UTF-8 HTML.  Every text that came from the network
(addresses, replies) is escaped.
"""

from __future__ import annotations

import html
import time

from mta.stats.snapshot import Snapshot

REFRESH_SECONDS = 10

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 background:#f4f5f7;color:#1d2330}
header{background:#1f3a5f;color:#fff;padding:14px 24px;display:flex;
 justify-content:space-between;align-items:baseline;flex-wrap:wrap;gap:8px}
header h1{font-size:20px;margin:0;font-weight:600}
header .meta{font-size:13px;opacity:.85}
main{padding:18px 24px;max-width:1280px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px}
.card{background:#fff;border-radius:8px;padding:14px 16px;box-shadow:0 1px 2px #0002}
.card .value{font-size:32px;font-weight:650;font-variant-numeric:tabular-nums}
.card .label{font-size:13px;color:#5a6475;text-transform:uppercase;letter-spacing:.04em}
.warn{background:#fff4e0;border-left:5px solid #e08a00;padding:10px 14px;margin:14px 0;
 border-radius:4px}
.warn.crit{background:#fde8e8;border-color:#c62828}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px;
 margin-top:14px}
section{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px #0002;
 margin-top:14px}
.grid section{margin-top:0}
h2{font-size:15px;margin:0 0 8px;color:#1f3a5f}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e6e8ec;vertical-align:top}
th{font-size:12px;color:#5a6475;text-transform:uppercase;letter-spacing:.03em}
td.n,th.n{text-align:right}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
.reason{color:#8a4b00}
.sent{color:#1b7a2f;font-weight:600}.deferred{color:#b26a00;font-weight:600}
.bounced,.expired{color:#c62828;font-weight:600}
.empty{color:#8a93a3;font-style:italic}
footer{padding:0 24px 18px;color:#8a93a3;font-size:12px}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _card(label: str, value: str, ident: str) -> str:
    return (
        f'<div class="card" id="{ident}"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div></div>'
    )


def _table(headings: list[str], rows: list[str], empty: str, numeric: set[int]) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(
        f"<th{' class=n' if i in numeric else ''}>{_e(h)}</th>" for i, h in enumerate(headings)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(cells: list[str], numeric: set[int]) -> str:
    tds = "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(cells))
    return f"<tr>{tds}</tr>"


def render_page(s: Snapshot, refresh: int = REFRESH_SECONDS) -> bytes:
    """The whole page for one snapshot."""
    disk = "n/a" if s.disk_free_percent is None else f"{s.disk_free_percent:.1f} %"
    cards = "".join(
        [
            _card("Mqueue messages", str(s.mqueue_messages), "mqueue_messages"),
            _card("Mqueue Kbytes", str(s.mqueue_kbytes), "mqueue_kbytes"),
            _card("SMTP active sessions", str(s.smtp_active_sessions), "smtp_active_sessions"),
            _card("Disk free", disk, "disk_free_percent"),
        ]
    )
    warnings = "".join(
        f'<div class="warn{" crit" if "1%" in w else ""}" role="alert">&#9888; {_e(w)}</div>'
        for w in s.warnings
    )
    queue_rows = [_row([_e(state), _e(n)], {1}) for state, n in s.queue.items()]
    total_rows = [_row([_e(kind), _e(n)], {1}) for kind, n in s.totals.items()]
    reject_rows = [
        _row([f'<span class="mono">{_e(reason)}</span>', _e(n)], {1})
        for reason, n in sorted(s.reject_reasons.items(), key=lambda item: -item[1])
    ]
    dest_rows = [
        _row(
            [_e(d.domain), _e(d.messages), _e(d.recipients), _e(_age(s.time - d.oldest))],
            {1, 2, 3},
        )
        for d in s.destinations
    ]
    oldest_rows = []
    for m in s.oldest_deferred:
        rcpts = "<br>".join(
            f'{_e(r.address)}<br><span class="reason">{_e(r.reason or "not tried yet")}</span>'
            for r in m.recipients
        )
        oldest_rows.append(
            _row(
                [
                    f'<span class="mono">{_e(m.queue_id)}</span>',
                    _e(_age(s.time - m.arrival_time)),
                    _e(m.sender or "MAILER-DAEMON"),
                    rcpts,
                    _e(m.attempts),
                    _e(_when(m.next_try)) if m.next_try else "now",
                ],
                {1, 4},
            )
        )
    recent_rows = [
        _row(
            [
                _e(_when(d.time)),
                f'<span class="mono">{_e(d.queue_id)}</span>',
                _e(d.recipient),
                _e(d.relay),
                f'<span class="{_e(d.status)}">{_e(d.status)}</span>',
                _e(d.delay),
                f'<span class="mono">{_e(d.detail)}</span>',
            ],
            set(),
        )
        for d in s.recent
    ]
    body = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{int(refresh)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(s.hostname)} &middot; mta statistics</title>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>{_e(s.hostname)} &middot; mail queue</h1>
<span class="meta">mta {_e(s.version)} &middot; up {_e(_age(s.uptime))} &middot;
updated {_e(_when(s.time))} &middot; refreshes every {int(refresh)} s</span></header>
<main>
<div class="cards">{cards}</div>
{warnings}
<div class="grid">
<section id="queue"><h2>Queue by state</h2>
{_table(["state", "messages"], queue_rows, "", {1})}</section>
<section id="totals"><h2>Since start</h2>
{_table(["", "count"], total_rows, "", {1})}</section>
<section id="rejects"><h2>Rejects by reason</h2>
{_table(["restriction", "count"], reject_rows, "No rejects since start.", {1})}</section>
</div>
<section id="destinations"><h2>Deferred mail by destination</h2>
{
        _table(
            ["domain", "messages", "recipients", "oldest"],
            dest_rows,
            "Nothing is deferred.",
            {1, 2, 3},
        )
    }</section>
<section id="oldest"><h2>Oldest deferred messages</h2>
{
        _table(
            ["queue id", "age", "sender", "recipients and reasons", "attempts", "next try"],
            oldest_rows,
            "Nothing is deferred.",
            {1, 4},
        )
    }</section>
<section id="recent"><h2>Recent deliveries</h2>
{
        _table(
            ["time", "queue id", "recipient", "relay", "status", "delay", "detail"],
            recent_rows,
            "No delivery attempts since start.",
            set(),
        )
    }</section>
</main>
<footer>Figures: <a href="api/stats">JSON</a> &middot; <a href="metrics">Prometheus</a>.
Totals count messages accepted and rejected, and recipients delivered, deferred and
bounced, since the daemon started.</footer>
</body>
</html>
"""
    return body.encode("utf-8")
