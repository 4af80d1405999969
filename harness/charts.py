"""The report's charts: matplotlib (Agg) figures as inline SVG text.

Every function takes plain arrays (times as ms) and returns one ``<svg>`` element ready to be
placed in an HTML page: no XML prolog, no DOCTYPE, no metadata, no namespace URLs, ids made
unique per chart, width and height left to CSS (the viewBox keeps the aspect ratio). Long
series are reduced by :func:`downsample` to a min/max envelope of a few thousand points, so a
90-day 1m run draws as fast as a one-day one and keeps its extremes (drawdown troughs).
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MAX_POINTS = 2400          # points per line after downsampling (min and max of 1,200 buckets)
MAX_MARKERS = 1000         # trade markers per symbol before they are thinned evenly
WIDTH_IN = 10.0
GREEN, RED, BLUE, GREY, ORANGE = "#1a7f37", "#cf222e", "#0b5cad", "#6e7781", "#bc4c00"

_ID = re.compile(r'\bid="([^"]+)"')


_STYLE = {
    "svg.fonttype": "none", "svg.hashsalt": "qt-report", "font.size": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#d8dee4",
    "grid.linewidth": 0.6, "axes.edgecolor": "#8c959f", "axes.titlesize": 10, "axes.titleweight": "bold",
    "axes.titlelocation": "left", "xtick.color": "#57606a", "ytick.color": "#57606a",
    "axes.labelcolor": "#57606a", "legend.frameon": False, "figure.dpi": 100, "axes.axisbelow": True,
}


def _styled(fn: Callable[..., str]) -> Callable[..., str]:
    """Run a chart function under the report's matplotlib style, leaving global rcParams alone.
    pyplot is never imported: figures are plain :class:`~matplotlib.figure.Figure` objects."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        import matplotlib

        with matplotlib.rc_context(_STYLE):
            return fn(*args, **kwargs)
    return wrapper


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points: per bucket, the minimum and the maximum in time order."""
    x, y = np.asarray(x), np.asarray(y, dtype=float)
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    filled = np.where(np.isnan(y), np.nanmean(y) if np.isfinite(y).any() else 0.0, y)
    picks = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        seg = filled[a:b]
        picks += (a + int(np.argmin(seg)), a + int(np.argmax(seg)))
    idx = np.unique(np.asarray(picks, dtype=np.int64))
    return x[idx], y[idx]


def _figure(width: float, height: float, nrows: int = 1, **kw):
    """A figure with fixed margins in inches (no tight-bbox pass: one draw per chart)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, 1, **kw)
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.2 / width, top=1 - 0.38 / height, bottom=0.5 / height)
    return fig, axes


def _thousands(ax) -> None:
    from matplotlib.ticker import StrMethodFormatter

    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def _dates(ts_ms: np.ndarray) -> np.ndarray:
    return np.asarray(ts_ms, dtype="int64").astype("datetime64[ms]")


def _time_axis(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _svg(fig, name: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return clean_svg(buf.getvalue(), name)


def clean_svg(text: str, name: str) -> str:
    """A matplotlib SVG made fit for inlining: prolog, metadata and namespace URLs removed,
    ids prefixed with ``name``, size from CSS, an accessible title."""
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(r'<svg([^>]*?)\swidth="[^"]*"\sheight="[^"]*"', r"<svg\1", text, count=1)
    text = _ID.sub(lambda m: f'id="{name}-{m.group(1)}"', text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{name}-{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{name}-{m.group(1)})", text)
    return text.replace("<svg", f'<svg class="chart" role="img" aria-label="{name}"', 1)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color=GREY)
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------------------------


@_styled
def equity_drawdown(ts: np.ndarray, equity: np.ndarray, drawdown_pct: np.ndarray, start_equity: float | None) -> str:
    """Equity on top, drawdown from the running peak beneath, on one time axis."""
    fig, (top, bottom) = _figure(WIDTH_IN, 4.8, 2, sharex=True, gridspec_kw={"height_ratios": [3, 1.3], "hspace": 0.25})
    if len(ts) == 0:
        _empty(top, "no equity recorded")
        _empty(bottom, "")
        return _svg(fig, "equity")
    x, y = downsample(ts, equity)
    top.plot(_dates(x), y, color=BLUE, linewidth=1.1, label="equity")
    if start_equity:
        top.axhline(start_equity, color=GREY, linewidth=0.8, linestyle="--", label="starting equity")
    top.set_title("Equity (quote asset)")
    _thousands(top)
    top.legend(loc="best", frameon=True, framealpha=0.9, edgecolor="none", ncol=2)
    dx, dd = downsample(ts, -np.asarray(drawdown_pct, dtype=float))
    bottom.fill_between(_dates(dx), dd, 0, color=RED, alpha=0.35, linewidth=0)
    bottom.plot(_dates(dx), dd, color=RED, linewidth=0.7)
    bottom.set_title("Drawdown from the running peak (%)", fontsize=9)
    _time_axis(bottom)
    return _svg(fig, "equity")


@_styled
def exposure(ts: np.ndarray, gross_pct: np.ndarray) -> str:
    """Gross exposure as a percentage of equity over time."""
    fig, ax = _figure(WIDTH_IN, 2.3)
    ax.set_title("Gross exposure (% of equity)")
    if len(ts) == 0:
        _empty(ax, "no equity recorded")
        return _svg(fig, "exposure")
    if len(ts) <= MAX_POINTS:
        ax.fill_between(_dates(ts), gross_pct, 0, step="post", color=ORANGE, alpha=0.3, linewidth=0)
        ax.step(_dates(ts), gross_pct, where="post", color=ORANGE, linewidth=0.8)
    else:       # too many switches to draw one by one: the peak and the average of each interval
        edges = np.linspace(0, len(ts), MAX_POINTS // 4 + 1).astype(np.int64)
        starts, counts = edges[:-1], np.diff(edges)
        y = np.nan_to_num(np.asarray(gross_pct, dtype=float))
        peak = np.maximum.reduceat(y, starts)
        mean = np.add.reduceat(y, starts) / counts
        t = _dates(np.asarray(ts)[starts])
        ax.fill_between(t, peak, 0, step="post", color=ORANGE, alpha=0.18, linewidth=0, label="peak in interval")
        ax.step(t, mean, where="post", color=ORANGE, linewidth=1.0, label="average in interval")
        ax.legend(loc="best", ncol=2, frameon=True, framealpha=0.9, edgecolor="none")
    ax.set_ylim(bottom=0)
    _time_axis(ax)
    return _svg(fig, "exposure")


@_styled
def price_with_trades(symbol: str, ts: np.ndarray, close: np.ndarray, entries: tuple[np.ndarray, np.ndarray],
                      exits: tuple[np.ndarray, np.ndarray], name: str) -> str:
    """A symbol's close with trade entries (▲) and exits (▼) marked."""
    fig, ax = _figure(WIDTH_IN, 3.0)
    ax.set_title(f"{symbol}: close, entries ▲ and exits ▼")
    _thousands(ax)
    if len(ts) == 0 and len(entries[0]) == 0:
        _empty(ax, "no price data for this symbol")
        return _svg(fig, name)
    if len(ts):
        x, y = downsample(ts, close)
        ax.plot(_dates(x), y, color="#24292f", linewidth=0.8, label="close")
    for (t, p), marker, color, label in ((entries, "^", GREEN, "entry"), (exits, "v", RED, "exit")):
        t, p = np.asarray(t), np.asarray(p, dtype=float)
        if len(t) > MAX_MARKERS:
            keep = np.linspace(0, len(t) - 1, MAX_MARKERS).astype(np.int64)
            t, p = t[keep], p[keep]
            label += f" ({MAX_MARKERS:,} of {len(entries[0]):,} shown)"
        if len(t):
            ax.scatter(_dates(t), p, marker=marker, s=16, color=color, label=label, zorder=3, linewidths=0)
    ax.legend(loc="best", ncol=3, frameon=True, framealpha=0.9, edgecolor="none")
    _time_axis(ax)
    return _svg(fig, name)


@_styled
def trade_returns(returns_pct: np.ndarray) -> str:
    """Histogram of closed trades' returns (after fees)."""
    fig, ax = _figure(WIDTH_IN / 2, 3.0)
    ax.set_title("Trade returns after fees (%), count")
    r = np.asarray(returns_pct, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) == 0:
        _empty(ax, "no closed trades")
        return _svg(fig, "trade-returns")
    counts, edges = np.histogram(r, bins=min(60, max(8, int(np.sqrt(len(r)) * 2))))
    k = int((edges[:-1] < 0).sum())         # bins left of 0 lose; one filled outline per colour, not a patch per bin
    if k:
        ax.stairs(counts[:k], edges[:k + 1], fill=True, color=RED, alpha=0.8)
    if k < len(counts):
        ax.stairs(counts[k:], edges[k:], fill=True, color=BLUE, alpha=0.8)
    ax.axvline(0, color=GREY, linewidth=0.8)
    ax.set_ylim(bottom=0)
    return _svg(fig, "trade-returns")


@_styled
def daily_returns(days_ms: np.ndarray, returns_pct: np.ndarray) -> str:
    """One bar per UTC day: green up, red down."""
    fig, ax = _figure(WIDTH_IN / 2, 3.0)
    ax.set_title("Daily returns (%)")
    r = np.asarray(returns_pct, dtype=float)
    if len(r) == 0:
        _empty(ax, "no equity recorded")
        return _svg(fig, "daily-returns")
    colors = np.where(r >= 0, GREEN, RED)
    x = np.arange(len(r))                       # one slot per day, labelled with its date
    if len(r) <= 60:
        ax.bar(x, r, width=0.75, color=colors)
    else:                                       # one artist for all days instead of a patch each
        width_pt = 72 * (WIDTH_IN / 2 - 1.05) * 0.75 / len(r)
        ax.vlines(x, 0, r, colors=colors, linewidth=max(0.8, width_pt))
    ax.axhline(0, color=GREY, linewidth=0.8)
    step = max(1, int(np.ceil(len(r) / 7)))
    ax.set_xticks(x[::step], [str(d)[5:10] for d in _dates(np.asarray(days_ms))[::step]])
    ax.set_xlim(-0.6, len(r) - 0.4)
    ax.grid(axis="x", visible=False)
    return _svg(fig, "daily-returns")


@_styled
def calibration(buckets: Sequence[dict]) -> str:
    """Hit rate per confidence bucket against the diagonal of perfect calibration."""
    fig, ax = _figure(WIDTH_IN / 2, 3.0)
    ax.set_title("Calibration: hit rate % by confidence")
    if not buckets:
        _empty(ax, "no signals with a known outcome")
        return _svg(fig, "calibration")
    conf = [100 * b["mean_confidence"] for b in buckets]
    hits = [b["hit_rate_pct"] for b in buckets]
    ax.plot([0, 100], [0, 100], color=GREY, linestyle="--", linewidth=0.8, label="perfect")
    ax.scatter(conf, hits, s=[12 + 60 * b["count"] / max(x["count"] for x in buckets) for b in buckets],
               color=BLUE, label="buckets", zorder=3)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("mean confidence %")
    ax.legend(loc="upper left")
    return _svg(fig, "calibration")


@_styled
def equity_overlay(series: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """Several runs' returns since the common start (%), on one time axis."""
    fig, ax = _figure(WIDTH_IN, 3.0)
    ax.set_title("Return over the common window (%)")
    drawn = False
    for (label, ts, ret), color in zip(series, (BLUE, ORANGE, GREEN, RED), strict=False):
        if len(ts):
            x, y = downsample(ts, ret)
            ax.plot(_dates(x), y, color=color, linewidth=1.0, label=label)
            drawn = True
    if not drawn:
        _empty(ax, "the runs share no equity points")
        return _svg(fig, "overlay")
    ax.axhline(0, color=GREY, linewidth=0.8)
    ax.legend(loc="best", frameon=True, framealpha=0.9, edgecolor="none")
    _time_axis(ax)
    return _svg(fig, "overlay")
