"""The datagen benchmark runs as its docstring says: a small run against the real test teacher on loopback prints
both rates and the speed-up (the benchmark had broken silently once datagen stopped taking teacher URLs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_run_prints_both_rates_and_a_speed_up():
    done = subprocess.run([sys.executable, "-m", "benchmarks.datagen_throughput", "--latency", "0.05",
                           "--baseline", "4", "--samples", "40", "--concurrency", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"sequential loop \(seeds\)\s+[\d.]+ samples/s\s+\(4 requests\)", done.stdout), done.stdout
    assert re.search(r"datagen, concurrency 8\s+[\d.]+ samples/s\s+\(40 samples, whole job\)", done.stdout)
    speed_up = float(re.search(r"speed-up\s+([\d.]+)x", done.stdout).group(1))
    assert speed_up > 1.0, done.stdout  # 8 requests in flight beat one at a time even on a loaded machine
