"""``python -m emotune.services.validator`` as a real process: health, a Score call, /metrics, graceful SIGTERM."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx

from emotune.grpc.probe import check
from emotune.v1 import validator_pb2, validator_pb2_grpc
from tests.support import free_port

REPO = Path(__file__).resolve().parents[4]


def test_service_process_serves_scores_metrics_and_stops_on_sigterm(tmp_path, styles_yaml):
    grpc_port, metrics_port = free_port(), free_port()
    env = {**os.environ, "EMOTUNE_VALIDATOR_ADDR": f"127.0.0.1:{grpc_port}", "EMOTUNE_METRICS_PORT": str(metrics_port),
           "EMOTUNE_STORE_PATH": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "emotune.services.validator"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while not check(f"127.0.0.1:{grpc_port}", "emotune.v1.Validator", timeout=1):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "validator did not become healthy"
            time.sleep(0.3)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = validator_pb2_grpc.ValidatorStub(channel).Score(
                validator_pb2.ScoreRequest(texts=["辛苦啦，早点休息哦～"], style="温柔", styles_yaml=styles_yaml),
                timeout=60)
        assert reply.scores[0].passed
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert "emotune_validator_scored_texts_total 1.0" in metrics
        assert 'emotune_grpc_requests_total{code="OK",method="Score",service="validator"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
