"""Background processes of a local stack (``make up``, ``make up-celery``): each in its own
process group (its children with it), with its pid and log in a run folder, stopped by
signalling the whole group."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def pid(run_dir: Path, name: str) -> int | None:
    """The pid of ``name`` when it is alive (a stale pid file is removed)."""
    path = run_dir / f"{name}.pid"
    if not path.exists():
        return None
    value = int(path.read_text().strip() or 0)
    try:
        os.kill(value, 0)
    except OSError:
        path.unlink(missing_ok=True)
        return None
    try:   # a zombie (our own child, dead, not reaped yet) is not alive
        with open(f"/proc/{value}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                os.waitpid(value, os.WNOHANG)
                path.unlink(missing_ok=True)
                return None
    except (OSError, IndexError, ChildProcessError):
        pass
    return value


def spawn(run_dir: Path, name: str, cmd: list[str], env: dict, cwd: Path) -> int:
    """Start ``cmd`` in a new session (its own process group), logging to run_dir/<name>.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if (running := pid(run_dir, name)) is not None:
        print(f"{name} already running (pid {running})")
        return running
    with open(run_dir / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=cwd)
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    print(f"{name} started (pid {proc.pid}, log {run_dir / f'{name}.log'})")
    return proc.pid


def signal_group(run_dir: Path, name: str, sig: int) -> int | None:
    """Send ``sig`` to the whole process group of ``name``; its pid, or None if not running."""
    value = pid(run_dir, name)
    if value is not None:
        try:
            os.killpg(value, sig)
        except ProcessLookupError:
            return None
    return value


def stop(run_dir: Path, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """``sig`` to the group, SIGKILL to what is left of it after ``timeout``."""
    value = signal_group(run_dir, name, sig)
    if value is None:
        (run_dir / f"{name}.pid").unlink(missing_ok=True)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and group_alive(value):
        time.sleep(0.3)
    if group_alive(value):
        os.killpg(value, signal.SIGKILL)
    (run_dir / f"{name}.pid").unlink(missing_ok=True)
    print(f"{name} stopped")


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still alive (zombies of our own are reaped)."""
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for entry in Path("/proc").iterdir():   # members that are only zombies do not count
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False
