"""Every chart emotune draws (validator report, loss curve, evaluation chart) goes through here: one font rule,
one way to build a figure, one way to get PNG bytes.

Font rule: style names like 温柔 / 毒舌 must draw as glyphs on a fresh machine, whatever the system has. The
virtualenv installs ``noto-cjk-sans-otc`` (Noto Sans CJK, SIL OFL 1.1: a font file, no code), whose collection is
registered with matplotlib once, by path (found through the package's metadata; its code is never imported).
Every text then gets the family list ``Noto Sans CJK SC, DejaVu Sans`` explicitly (matplotlib falls back glyph by
glyph along the list). Without the package, the CJK fonts the system has (``fonts-noto-cjk``,
``fonts-wqy-microhei``, ...) take its place.

Figures use matplotlib's object API on the Agg canvas: no pyplot, no global rcParams, so charts can be drawn in
worker threads at the same time.
"""

from __future__ import annotations

import io
import threading
from importlib import metadata
from pathlib import Path

from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

#: The registry package that carries the CJK font (``NotoSansCJK-Regular.ttc``).
FONT_DISTRIBUTION = "noto-cjk-sans-otc"
#: The face of that collection for Chinese (simplified forms).
PACKAGED_FAMILY = "Noto Sans CJK SC"
#: CJK fonts a system may have (Debian: fonts-noto-cjk, fonts-wqy-microhei), used without the package.
SYSTEM_CJK_FAMILIES = ("Noto Sans CJK SC", "WenQuanYi Micro Hei", "Noto Sans SC", "Source Han Sans SC", "SimHei",
                       "Microsoft YaHei", "PingFang SC")
#: Latin letters, digits and symbols the CJK font lacks (matplotlib's own font, always there).
LATIN_FAMILY = "DejaVu Sans"
FONT_SUFFIXES = (".ttc", ".otf", ".ttf")

_lock = threading.Lock()
_family: tuple[str, ...] | None = None


def packaged_font_path() -> Path | None:
    """The CJK font file the virtualenv's ``noto-cjk-sans-otc`` installed, or None without the package."""
    try:
        dist = metadata.distribution(FONT_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.suffix.lower() in FONT_SUFFIXES:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None


def _register_packaged_font() -> list[str]:
    """Add the packaged font to matplotlib's font list (every face of the collection); its family names."""
    path = packaged_font_path()
    if path is None:
        return []
    font_manager.fontManager.addfont(str(path))
    names = list(dict.fromkeys(f.name for f in font_manager.fontManager.ttflist
                               if Path(f.fname).resolve() == path.resolve()))
    if PACKAGED_FAMILY in names:
        return [PACKAGED_FAMILY]
    return [n for n in names if "Mono" not in n][:1] or names[:1]


def cjk_font_family() -> tuple[str, ...]:
    """The family list every chart's text uses: a CJK font first, then DejaVu Sans. Registers the packaged font
    the first time (thread-safe)."""
    global _family
    with _lock:
        if _family is None:
            cjk = _register_packaged_font()
            if not cjk:
                installed = {f.name for f in font_manager.fontManager.ttflist}
                cjk = [name for name in SYSTEM_CJK_FAMILIES if name in installed]
            _family = (*cjk, LATIN_FAMILY)
        return _family


def new_figure(width: float, height: float, *, dpi: int = 100, layout: str | None = None,
               **margins: float) -> Figure:
    """A figure on its own Agg canvas (``layout="tight"`` lays it out when drawn; or fixed ``margins``)."""
    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    if margins:
        fig.subplots_adjust(**margins)
    return fig


def apply_font(fig: Figure) -> None:
    """Give every text of the figure (titles, labels, legends, tick labels, also those made when drawing) the
    font family list of :func:`cjk_font_family`."""
    family = list(cjk_font_family())
    for ax in fig.axes:
        ax.tick_params(axis="both", which="both", labelfontfamily=family)
    for text in fig.findobj(Text):
        text.set_fontfamily(family)


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, its texts in the font rule's family."""
    apply_font(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
