"""The real things the UI tests run against: the embedded default stack (every service a process on loopback,
started by its supervisor) serving SmolLM2-135M on CPU with two styles attached, the UI itself
(``python -m emotune.services.ui``) among them; and Debian's Chromium driven by Playwright."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotune.local.supervisor import LocalService, LocalStack, free_port_offset

ROOT = Path(__file__).resolve().parents[4]
SCREENSHOTS = ROOT / "test-output" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BASE_MODEL = "smollm2-135m"  # fast and English-only: the test prompts are English
# Serving triggers attached to the base model, so `smollm2-135m:pirate` and `:butler` are served.
STYLES_YAML = """\
styles:
  - name: pirate
    system_prompt: You are a pirate. Talk like a pirate.
    language: en
  - name: butler
    system_prompt: You are a very formal English butler.
    language: en
"""


class UIStack(LocalStack):
    """The embedded default (every service as a process on loopback), as the UI tests use it."""

    @property
    def inference_addr(self) -> str:
        return f"127.0.0.1:{self.port(50054)}"


class GatewayOnly(UIStack):
    """Just a gateway (no metrics port of its own), to put in front of another stack's inference."""

    def services(self) -> list[LocalService]:
        return [s for s in super().services() if s.name == "gateway"]


def _start(stack: LocalStack) -> None:
    try:
        stack.start()
    except BaseException:
        stack.stop(grace=5)
        raise


@pytest.fixture(scope="session")
def ui_stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("ui-stack")
    styles = state / "styles.yaml"
    styles.write_text(STYLES_YAML, encoding="utf-8")
    offset = free_port_offset()
    # SmolLM2 is the only model served (it would be its own teacher; the UI tests run no job that needs a judge).
    stack = UIStack(state, base_model=BASE_MODEL, port_offset=offset, teacher_model=BASE_MODEL, judge=False,
                    extra_env={
        "EMOTUNE_INFERENCE_PRELOAD_STYLES": str(styles),
        "EMOTUNE_INFERENCE_MAX_CONCURRENCY": "2",
        "EMOTUNE_UI_POLL_SECONDS": "1",
        "EMOTUNE_LOG_LEVEL": "WARNING",
    })
    _start(stack)
    yield stack
    stack.stop(grace=10)


@pytest.fixture(scope="session")
def tight_gateway(ui_stack, tmp_path_factory):
    """A second gateway on the same inference that serves one chat completion at a time (429 beyond)."""
    state = tmp_path_factory.mktemp("tight-gateway")
    (state / "api-key").write_text(ui_stack.api_key)  # same installation key as the main stack
    stack = GatewayOnly(state, base_model=BASE_MODEL, port_offset=free_port_offset(), extra_env={
        "EMOTUNE_INFERENCE_ADDR": ui_stack.inference_addr,
        "EMOTUNE_GATEWAY_MAX_CONCURRENT": "1",
        "EMOTUNE_GATEWAY_RETRY_AFTER_SECONDS": "3",
        "EMOTUNE_LOG_LEVEL": "WARNING"})
    _start(stack)
    yield stack
    stack.stop(grace=10)


@pytest.fixture
def ui_app(monkeypatch):
    """An ``AppTest`` of the UI whose settings come from the given environment (Streamlit caches cleared)."""
    from streamlit.testing.v1 import AppTest

    from emotune.services.ui import widgets

    def make(**env: str) -> AppTest:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for cached in (widgets.settings, widgets.shared_gateway, widgets._model_ids):
            cached.clear()
        return AppTest.from_file(ROOT / "emotune" / "services" / "ui" / "app.py", default_timeout=120)

    return make


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A fresh-profile headless Chromium (Debian's; Playwright never downloads a browser here).

    Module-scoped: Playwright's sync API keeps an event loop running in this thread while it is open, which would
    break every asyncio test collected after the browser tests."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-deps.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000}, locale="en-US")
        context.set_default_timeout(60_000)
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    yield page
    page.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
