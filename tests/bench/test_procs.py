"""/proc accounting and clean-up (bench/procs.py) on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.procs import cpu_seconds, kill_tree, memory, process_table, read_stat, tree


def test_read_stat_of_this_process() -> None:
    """Parent and session come from /proc/self/stat, whatever the command name."""
    st = read_stat(os.getpid())
    assert st is not None
    assert st.ppid == os.getppid()
    assert st.session == os.getsid(0)
    assert read_stat(2**22 + 1) is None  # above pid_max: never a process


def test_tree_cpu_and_memory_cover_children() -> None:
    """A child that burns CPU is in the tree of its parent, its CPU shows in the
    tree's total, and the tree's memory is the sum of its processes'."""
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    child = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(30)"])
    try:
        time.sleep(1.0)
        pids = {st.pid for st in tree([os.getpid()])}
        assert child.pid in pids
        assert cpu_seconds([child.pid]) >= 0.25
        rss, pss = memory([child.pid])
        assert rss > 1_000_000 and 0 < pss <= rss
        both = memory([os.getpid(), child.pid])
        assert both[0] > rss
    finally:
        child.kill()
        child.wait()


def test_kill_tree_reaches_children_that_left_for_their_own_session() -> None:
    """A daemon that calls setsid() below a root is still killed, like
    Postfix's master below postfix-script."""
    script = (
        "import os, subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import os, time; os.setsid(); "
        "time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    root = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert root.stdout is not None
    grandchild = int(root.stdout.readline())
    time.sleep(0.3)
    assert grandchild in process_table()
    assert kill_tree([root.pid]) >= 2
    root.wait(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        st = read_stat(grandchild)
        if st is None:
            break
        time.sleep(0.05)
    # Gone, or a zombie waiting for its (dead) parent's reaper.
    st = read_stat(grandchild)
    if st is not None:
        with open(f"/proc/{grandchild}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "Z"
