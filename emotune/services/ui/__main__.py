"""``python -m emotune.services.ui [streamlit options]``: serve the UI on ``EMOTUNE_UI_BIND:EMOTUNE_UI_PORT``.

Streamlit's own health endpoint, ``/_stcore/health``, is what compose/k8s probes should call.
"""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.web import cli as streamlit_cli

from emotune.services.ui.config import UISettings

APP = Path(__file__).with_name("app.py")


def streamlit_argv(settings: UISettings, extra: list[str]) -> list[str]:
    return [
        "streamlit", "run", str(APP),
        "--server.address", settings.ui_bind,
        "--server.port", str(settings.ui_port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        *extra,
    ]


def main() -> None:
    sys.argv = streamlit_argv(UISettings(), sys.argv[1:])
    sys.exit(streamlit_cli.main())


if __name__ == "__main__":
    main()
