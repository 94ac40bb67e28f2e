"""A benchmark of mta against a throwaway Postfix in the same run.

``python -m bench`` (bench/run.py) starts both servers from equivalent
configurations on loopback, drives them with Postfix's smtp-source and the
probes of bench/probe.py into smtp-sink, and prints a table per scenario
(bench/scenarios.py) with both figures and the ratio (bench/report.py).
docs/performance.md describes the command, the scenarios and the results.
"""
