"""The runner's delay queue: retries wait there, not in worker threads."""
import time

from cfa_opco.outbox.delay_queue import SEND, SETTLE, DelayQueue


def test_dossiers_waiting_for_a_later_try_do_not_hold_up_the_next_chunk():
    """The runner feeds one chunk ahead of the workers, counting only the dossiers that are due
    (or being worked on): those waiting for Retry-After or a read-back's tick do not count."""
    q = DelayQueue(time.monotonic() + 60, group=100)
    now = time.monotonic()
    for i in range(3):
        q.put(SEND, now, f"D{i}", new=True)
    q.put(SEND, now + 30, "RA", new=True)        # Retry-After
    q.put(SETTLE, now + 30, "RB", new=True)      # read-back
    assert q.outstanding == 5 and q.active() == 3
    q.pause_until = now + 60          # a whole-key pause: nothing is due, yet all are in flight
    assert q.active() == 3
