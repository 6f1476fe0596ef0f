"""Tiny line plots with Pillow (no matplotlib dependency): training curves for model cards and reports."""
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

__all__ = ['line_plot', 'plot_training_curve', 'training_series', 'nice_ticks']

Series = Dict[str, Sequence[Tuple[float, float]]]
_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # matplotlib tab10
_LEGEND_W = 170  # px right of the axes reserved for the legend, so it never hides a line


def nice_ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    """About `n` round tick values (steps of 1, 2, 2.5 or 5 x 10^k) whose range covers [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f'cannot place ticks on a non-finite range [{lo}, {hi}]')
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _fmt(v: float, ticks: Sequence[float]) -> str:
    """`v` with the fewest decimals that still tell every tick apart exactly."""
    digits = next((d for d in range(7) if all(abs(round(t, d) - t) < 1e-9 for t in ticks)), 6)
    return f'{v:.{digits}f}'


def _smooth(pts: Sequence[Tuple[float, float]], window: int) -> List[Tuple[float, float]]:
    """Trailing running mean over `window` points (window 1 returns the points)."""
    out, acc = [], 0.0
    for i, (x, y) in enumerate(pts):
        acc += y - (pts[i - window][1] if i >= window else 0.0)
        out.append((x, acc / min(i + 1, window)))
    return out


def _faint(c: Tuple[int, int, int]) -> Tuple[int, int, int]:
    return tuple(int(v + (255 - v) * 0.7) for v in c)


def _panel(d: ImageDraw.ImageDraw, box: Tuple[int, int, int, int], series: Series, title: str, xlabel: str,
           ylabel: str, xlim: Optional[Tuple[float, float]] = None, smooth: bool = False,
           faint: Optional[Dict[str, List[Sequence[Tuple[float, float]]]]] = None) -> None:
    """Axes with round ticks in `box` (left, top, right, bottom of the whole panel), legend on the right;
    `faint[name]`: more lines drawn thin in a pale tint of series `name`'s colour, behind the series."""
    left, top, right, bottom = box
    L, T, R, B = left + 60, top + 28, right - _LEGEND_W, bottom - 40
    faint = faint or {}
    pts = [p for s in series.values() for p in s] + [p for ls in faint.values() for s in ls for p in s]
    x0, x1 = xlim or (min(p[0] for p in pts), max(p[0] for p in pts))
    xt = nice_ticks(x0, x1)
    if x1 > x0:  # the x axis spans the data (16 epochs end at 16, not at the next round tick); y gets round ends
        xt = [v for v in xt if x0 - 1e-9 <= v <= x1 + 1e-9]
    else:
        x0, x1 = xt[0], xt[-1]
    yt = nice_ticks(min(p[1] for p in pts), max(p[1] for p in pts))
    y0, y1 = yt[0], yt[-1]

    def xy(x: float, y: float) -> Tuple[float, float]:
        return L + (x - x0) / (x1 - x0) * (R - L), B - (y - y0) / (y1 - y0) * (B - T)

    for yv in yt:
        _, py = xy(x0, yv)
        d.line([L, py, R, py], fill=(232, 232, 232))
        d.line([L - 4, py, L, py], fill='black')
        label = _fmt(yv, yt)
        d.text((L - 8 - 6 * len(label), py - 6), label, fill='black')
    for xv in xt:
        px, _ = xy(xv, y0)
        d.line([px, B, px, B + 4], fill='black')
        label = _fmt(xv, xt)
        d.text((px - 3 * len(label), B + 8), label, fill='black')
    d.rectangle([L, T, R, B], outline='black')
    d.text((L, top + 2), title, fill='black')
    d.text(((L + R) // 2 - 3 * len(xlabel), bottom - 18), xlabel, fill='black')
    if ylabel:
        d.text((left + 4, top + 15), ylabel, fill='black')
    colors = {name: _COLORS[i % len(_COLORS)] for i, name in enumerate(series)}
    for name, lines in faint.items():
        for s in lines:
            if len(s) > 1:
                d.line([xy(*p) for p in sorted(s)], fill=_faint(colors[name]), width=1)
    for i, (name, s) in enumerate(series.items()):
        c = colors[name]
        s = sorted(s)
        if smooth and len(s) > 50:
            d.line([xy(*p) for p in s], fill=_faint(c), width=1)
            s = _smooth(s, max(2, len(s) // 50))
        if len(s) > 1:
            d.line([xy(*p) for p in s], fill=c, width=2)
        for p in (s if len(s) <= 30 else []):  # mark sparse series (e.g. one kNN point per epoch)
            px, py = xy(*p)
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=c)
        d.text((R + 10, T + 4 + 14 * i), name, fill=c)


def line_plot(series: Series, path: Path, title: str = '', xlabel: str = '', ylabel: str = '',
              size: Tuple[int, int] = (700, 400),
              faint: Optional[Dict[str, List[Sequence[Tuple[float, float]]]]] = None) -> Path:
    """One panel, one line per named (non-empty) series of (x, y) points, round ticks, legend beside the axes.
    `faint`: {series name: [more (x, y) lines]} drawn thin and pale in that series' colour (e.g. the seeds
    behind their mean)."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise ValueError('nothing to plot')
    unknown = sorted(set(faint or {}) - set(series))
    if unknown:
        raise ValueError(f'faint lines for series that are not plotted: {unknown}')
    img = Image.new('RGB', size, 'white')
    _panel(ImageDraw.Draw(img), (0, 0, *size), series, title, xlabel, ylabel, faint=faint)
    path = Path(path)
    img.save(path)
    return path


def training_series(records: List[dict]) -> Tuple[Series, Series]:
    """(losses relative to their first value, online kNN top-1 in % per k) against epoch, from `read_log` rows."""
    steps = [r for r in records if 'lr' in r and 'epoch' in r]
    losses: Series = {}
    for k in sorted({k for r in steps for k in r if k.startswith('loss')}):
        vals = [(r['epoch'], r[k]) for r in steps if k in r]
        if vals and vals[0][1]:
            losses[f'{k} (start {vals[0][1]:.3g})'] = [(e, v / vals[0][1]) for e, v in vals]
    knn: Series = {}
    for k in sorted({k for r in records for k in r if k.startswith('knn_top1_k')}, key=lambda k: int(k[10:])):
        knn[f'k={k[10:]}'] = [(r['epoch'], r[k]) for r in records if k in r]
    return losses, knn


def plot_training_curve(records: List[dict], path: Path, title: str = '') -> Optional[Path]:
    """A `macrl train` log as a PNG: losses relative to their first value (raw faint, running mean bold) and,
    when the run logged it (`--knn-every`), the online kNN top-1 below on the same epoch axis.
    Returns None (and writes nothing) when the log holds neither."""
    losses, knn = training_series(records)
    panels = [(s, t, y) for s, t, y in ((losses, f'{title} training losses', 'relative to start'),
                                       (knn, 'online kNN top-1 (small bank / held-out slice)', '%')) if s]
    if not panels:
        return None
    pts = [p for s, _, _ in panels for v in s.values() for p in v]
    xlim = (0.0, max(p[0] for p in pts))
    W, H = 700, 360
    img = Image.new('RGB', (W, H * len(panels)), 'white')
    d = ImageDraw.Draw(img)
    for i, (s, t, y) in enumerate(panels):
        _panel(d, (0, i * H, W, (i + 1) * H), s, t, 'epoch', y, xlim=xlim, smooth=True)
    path = Path(path)
    img.save(path)
    return path
