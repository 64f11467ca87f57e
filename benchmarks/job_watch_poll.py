"""Watching a long job on S3: one poll that lists every event vs one that lists only keys after the offset.

A training job writes thousands of progress/metric events; the gateway, the UI and the pipeline watch it with
``WatchJob(after=N)``, polling several times a second. The baseline is what the first JobStore did: list the
job's whole event folder and filter by seq in Python. The candidate is ``JobStore.events(after)``: S3
``start-after``, so a poll costs the same however long the job has run. Both run against the same real S3
server (Swift s3api from ``scripts/swift-s3.sh``) and the local store, on the same job.

    python -m benchmarks.job_watch_poll [--events 600] [--polls 10]
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from emotune.jobs.store import JobEvent, JobStore
from emotune.settings import Settings
from emotune.store.base import ArtifactStore
from emotune.store.local import LocalStore
from emotune.store.s3 import S3Store

ROOT = Path(__file__).resolve().parents[1]


def poll_listing_everything(jobs: JobStore, job_id: str, after: int) -> list[JobEvent]:
    """The baseline: list the whole event folder, keep keys after the offset, read those."""
    start = f"{jobs.prefix}/events/{job_id}/{after:010d}.json"
    return [
        JobEvent.model_validate_json(jobs.store.get_bytes(info.key))
        for info in jobs.store.list(f"{jobs.prefix}/events/{job_id}/")
        if info.key > start
    ]


def measure(store: ArtifactStore, events: int, polls: int) -> tuple[float, float]:
    jobs = JobStore(store)
    job_id = jobs.create("training", {}).job_id
    for step in range(events):
        jobs.append(job_id, "metric", f"step {step}", step=step, loss=1.0 / (step + 1))
    tail = jobs.event_count(job_id) - 1  # a watcher that is one event behind
    timings = []
    for poll in (lambda: poll_listing_everything(jobs, job_id, tail), lambda: jobs.events(job_id, tail)):
        assert [e.seq for e in poll()] == [tail + 1]
        started = time.perf_counter()
        for _ in range(polls):
            poll()
        timings.append((time.perf_counter() - started) / polls)
    return timings[0], timings[1]


def report(name: str, baseline: float, candidate: float) -> None:
    print(f"{name:>6}: list everything {baseline * 1000:8.1f} ms/poll | start-after {candidate * 1000:6.1f} ms/poll"
          f" | {baseline / candidate:5.1f}x faster")


app = typer.Typer(add_completion=False)


@app.command(help=__doc__)
def main(events: Annotated[int, typer.Option(help="events already in the job's log")] = 600, polls: int = 10) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report("local", *measure(LocalStore(Path(tmp) / "store"), events, polls))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        swift = [str(ROOT / "scripts" / "swift-s3.sh"), str(Path(tmp) / "swift")]
        subprocess.run([*swift, str(port)], check=True)
        try:
            settings = Settings(
                store_backend="s3", s3_endpoint=f"127.0.0.1:{port}", s3_access_key=SecretStr("test:tester"),
                s3_secret_key=SecretStr("testing123"), s3_bucket="bench", s3_region="us-east-1",
            )
            report("s3", *measure(S3Store.from_settings(settings), events, polls))
        finally:
            subprocess.run([ROOT / "scripts" / "swift-s3.sh", "stop", str(Path(tmp) / "swift")], check=False)
    print(f"({events} events in the log, watcher one event behind, mean of {polls} polls)")


if __name__ == "__main__":
    app()
