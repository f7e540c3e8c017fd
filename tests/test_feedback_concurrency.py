"""10,000 feedback updates from 4 concurrent processes: no lost or duplicated rows, state equals a batch refit."""

import multiprocessing as mp
import time

import numpy as np

from calib.recalibrate import FeedbackStore, OnlineHistogramCalibrator, Recalibrator

PROCESSES = 4
PER_PROCESS = 2500


def worker_rows(worker: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + worker)
    c = rng.random(PER_PROCESS)
    return c, (rng.random(PER_PROCESS) < c**2).astype(float)


def worker(path: str, index: int, start, done) -> None:
    """One process: 2500 single-row updates, each its own transaction, racing the other three."""
    c, y = worker_rows(index)
    rec = Recalibrator(path, timeout=60)
    start.wait()
    for i in range(PER_PROCESS):
        rec.update([c[i]], [y[i]], questions=[f"q{index}-{i}"], uids=[f"w{index}-{i}"])
    rec.close()
    done.put(index)


def test_concurrent_writers_lose_nothing_and_match_a_batch_refit(tmp_path):
    path = str(tmp_path / "fb.db")
    Recalibrator(path, n_bins=20).close()  # create the database and the calibrator first
    ctx = mp.get_context("spawn")  # never fork a process that has started JAX threads
    start, done = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(path, w, start, done)) for w in range(PROCESSES)]
    began = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    elapsed = time.perf_counter() - began
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert sorted(done.get(timeout=5) for _ in procs) == list(range(PROCESSES))

    with FeedbackStore(path) as store:
        stored = store.rows()
        assert store.check() == "ok"
    expected = {
        f"w{w}-{i}": (c, y) for w in range(PROCESSES) for i, (c, y) in enumerate(zip(*worker_rows(w)))
    }
    assert len(stored) == PROCESSES * PER_PROCESS  # nothing lost
    assert len({r.uid for r in stored}) == len(stored)  # nothing duplicated
    assert {r.uid: (r.confidence, float(r.correct)) for r in stored} == expected  # every value intact

    rec = Recalibrator(path)
    all_c = np.concatenate([worker_rows(w)[0] for w in range(PROCESSES)])
    all_y = np.concatenate([worker_rows(w)[1] for w in range(PROCESSES)])
    batch = OnlineHistogramCalibrator(n_bins=20).fit(all_c, all_y)
    assert rec.calibrator == batch
    assert rec.rows_seen == max(r.id for r in stored)
    grid = np.linspace(0, 1, 501)
    assert np.array_equal(rec.transform(grid), batch.transform(grid))
    print(f"{PROCESSES * PER_PROCESS} updates from {PROCESSES} processes in {elapsed:.1f} s")
