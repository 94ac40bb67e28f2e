"""The hot-spot reduction of py-spy's collapsed stacks (bench/profile.py)."""

from __future__ import annotations

from bench.profile import hotspots, parse_collapsed

# py-spy --subprocesses --threads --format raw: the process frame holds the
# command line, semicolons included.
PROC = "process 42:\"python -c import sys; sys.argv[0] = 'twistd'; run() -n mta -c /x\""
COLLAPSED = "\n".join(
    [
        f"{PROC};thread (42): MainThread;run (a.py:1);delete (store.py:300);"
        "_unlink (store.py:700) 30",
        f"{PROC};thread (42): MainThread;run (a.py:1);doRead (tcp.py:269) 10",
        f"{PROC};thread (43): PoolThread-mta-fsync-0;work (t.py:1);fsync (sync.py:47) 15",
        f"{PROC};thread (44): PoolThread-mta-fsync-1;work (t.py:1);fsync (sync.py:47) 5",
        "not a stack line",
    ]
)


def test_parse_keeps_thread_groups_and_frames_despite_semicolons_in_the_command() -> None:
    """The process frame is dropped whole; pool threads group by name without
    their number; frames stay outermost first."""
    stacks = parse_collapsed(COLLAPSED)
    assert [(g, n) for g, _, n in stacks] == [
        ("MainThread", 30),
        ("MainThread", 10),
        ("PoolThread-mta-fsync-*", 15),
        ("PoolThread-mta-fsync-*", 5),
    ]
    assert stacks[0][1] == ["run (a.py:1)", "delete (store.py:300)", "_unlink (store.py:700)"]


def test_hotspots_reports_busy_share_of_wall_clock_and_self_time_with_callers() -> None:
    """With 100 samples/s over 1 s, 40 samples on the main thread is 40% busy;
    the leaf with most samples comes first, with its callers."""
    text = hotspots(COLLAPSED, seconds=1.0, rate=100)
    assert "40.0% busy  MainThread" in text
    assert "20.0% busy  PoolThread-mta-fsync-*" in text
    main = text.split("MainThread: top")[1]
    first = main.splitlines()[1]
    assert first.strip().startswith("30.0%  _unlink (store.py:700)  < delete < run")


def test_hotspots_without_samples_says_so() -> None:
    """An empty recording is reported, not shown as an empty table."""
    assert hotspots("", seconds=5, rate=100).startswith("no samples")
