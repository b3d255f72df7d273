"""The stacks' background processes (cfa_opco.stack.processes): each in its own process group,
stopped as a whole group (children included), a stale pid file is not a running process."""
from __future__ import annotations

import os
import signal
import sys
import time

from cfa_opco.stack import processes


def test_stop_ends_the_whole_group_and_stale_pids_are_forgotten(tmp_path):
    run = tmp_path / "run"
    # a parent that starts a child of its own (as airflow celery worker starts its pool)
    cmd = [sys.executable, "-c", "import subprocess, sys, time; "
           "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
           "open(sys.argv[1], 'w').write(str(c.pid)); time.sleep(600)", str(tmp_path / "child.pid")]
    pid = processes.spawn(run, "demo", cmd, dict(os.environ), tmp_path)
    assert os.getpgid(pid) == pid                     # its own group, not ours
    assert processes.spawn(run, "demo", cmd, dict(os.environ), tmp_path) == pid   # not started twice
    while not (tmp_path / "child.pid").exists() or not (tmp_path / "child.pid").read_text():
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())
    assert os.getpgid(child) == pid
    processes.stop(run, "demo", signal.SIGTERM, timeout=30)
    assert not processes.group_alive(pid)
    assert processes.pid(run, "demo") is None and not (run / "demo.pid").exists()
    (run / "gone.pid").write_text(str(pid))           # a pid file left by a crash
    assert processes.pid(run, "gone") is None and not (run / "gone.pid").exists()
