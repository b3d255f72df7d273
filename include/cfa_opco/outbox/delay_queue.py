"""The batch's jobs waiting for their next step (a send, or a grouped read-back), each at its
own time: a retry waits here, not in a worker thread, so it never holds up the other jobs of
the batch. A whole-key pause (real rate limiting) delays every step of the key."""
from __future__ import annotations

import heapq
import threading
import time

SEND, SETTLE = 0, 1


class DelayQueue:
    def __init__(self, deadline: float, group: int, collect: int = 100):
        self.cond = threading.Condition()
        self.heaps: dict[int, list] = {SEND: [], SETTLE: []}
        self.seq = 0
        self.outstanding = 0
        self.finished: list = []
        self.deadline = deadline
        self.group = group
        self.collect = collect
        self.pause_until = 0.0
        self.consecutive_429 = 0
        self.closed = False

    def put(self, kind: int, when: float, job, new: bool = False) -> None:
        with self.cond:
            self.seq += 1
            heapq.heappush(self.heaps[kind], (when, self.seq, job))
            if new:
                self.outstanding += 1
            self.cond.notify()

    def finish(self, job) -> None:
        """A job is done. The collector is woken by groups (``collect`` jobs, or the last one):
        its outcomes are then recorded in one statement, not a few rows at a time (measured: 18,000
        statements for 8,500 dossiers woken one by one, 1,200 by groups of 100)."""
        with self.cond:
            self.outstanding -= 1
            self.finished.append(job)
            if len(self.finished) >= self.collect or self.outstanding <= 0:
                self.cond.notify_all()

    def expire(self) -> None:
        """Everything left is due now (deadline reached, or the key refused)."""
        with self.cond:
            self.deadline = 0.0
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def take(self) -> tuple[int, list] | None:
        """The next due step: (SEND, [job]) or (SETTLE, [jobs due together, up to ``group``])."""
        with self.cond:
            while True:
                if self.closed:
                    return None
                now = time.monotonic()
                late = now >= self.deadline
                best = None
                for kind, heap in self.heaps.items():
                    if heap:
                        start = heap[0][0] if late else max(heap[0][0], self.pause_until)
                        if best is None or start < best[0]:
                            best = (start, kind)
                if best is not None and best[0] <= now:
                    kind = best[1]
                    heap = self.heaps[kind]
                    jobs = [heapq.heappop(heap)[2]]
                    if kind == SETTLE:   # read back together all that are due (one liste call)
                        while heap and len(jobs) < self.group and (late or heap[0][0] <= now):
                            jobs.append(heapq.heappop(heap)[2])
                    return kind, jobs
                wait = 0.5 if best is None else best[0] - now
                self.cond.wait(max(0.001, min(wait, self.deadline - now if not late else wait, 0.5)))

    def active(self) -> int:
        """Outstanding jobs that are due or being worked on: those waiting for a later time
        (Retry-After, a backoff, a read-back's tick) do not hold up the next chunk."""
        with self.cond:
            now = time.monotonic()
            later = sum(1 for heap in self.heaps.values() for entry in heap if entry[0] > now)
            return self.outstanding - later

    def drain_finished(self, wait: float = 0.0) -> list:
        """The jobs finished so far; with ``wait``, first wait up to that long for a group of
        ``collect`` (or for the last outstanding one)."""
        with self.cond:
            end = time.monotonic() + wait
            while wait and len(self.finished) < self.collect and self.outstanding > 0:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            done, self.finished = self.finished, []
            return done
