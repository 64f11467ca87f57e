"""Run a training subprocess: relay its lines as they come, kill it (and only it) on cancel or shutdown."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from emotune.errors import EmotuneError
from emotune.logging import get_logger

log = get_logger(__name__)
TAIL_LINES = 40


class ProcessFailed(EmotuneError):
    """A backend process exited with an error; the message carries its reason or its last output lines."""


async def run_process(argv: Sequence[str], on_line: Callable[[str], None], *, cwd: Path | None = None,
                      env: dict[str, str] | None = None, grace_seconds: float = 10.0, what: str = "process") -> None:
    """Run ``argv``; every output line (stdout and stderr, merged) goes to ``on_line``.

    Raises :class:`ProcessFailed` with the output's tail on a non-zero exit. If the awaiting task is cancelled,
    the process group gets SIGTERM, then SIGKILL after ``grace_seconds``.
    """
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True, limit=16 * 1024 * 1024,
    )
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            tail.append(line)
            on_line(line)
        code = await process.wait()
    except asyncio.CancelledError:
        await _stop(process, grace_seconds)
        raise
    if code != 0:
        detail = "\n".join(tail)
        raise ProcessFailed(f"{what} exited with status {code}:\n{detail}", exit_code=code)


async def _stop(process: asyncio.subprocess.Process, grace_seconds: float) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    log.info("stopped backend process", pid=process.pid, returncode=process.returncode)
