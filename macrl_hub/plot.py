"""Tiny line plots with Pillow (no matplotlib dependency): training curves for model cards and reports."""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

__all__ = ['line_plot', 'plot_training_curve']

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # matplotlib tab10


def line_plot(series: Dict[str, Sequence[Tuple[float, float]]], path: Path, title: str = '', xlabel: str = '',
              size: Tuple[int, int] = (640, 400)) -> Path:
    """One panel, one line per named series of (x, y) points, min/max tick labels, a legend."""
    W, H = size
    L, R, T, B = 70, 20, 30, 45
    img = Image.new('RGB', size, 'white')
    d = ImageDraw.Draw(img)
    pts = [p for s in series.values() for p in s]
    if not pts:
        raise ValueError('nothing to plot')
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def xy(x, y):
        return L + (x - x0) / (x1 - x0) * (W - L - R), H - B - (y - y0) / (y1 - y0) * (H - T - B)

    d.rectangle([L, T, W - R, H - B], outline='black')
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        yv = y0 + frac * (y1 - y0)
        _, py = xy(x0, yv)
        d.line([L - 4, py, L, py], fill='black')
        d.text((4, py - 6), f'{yv:.3g}', fill='black')
        xv = x0 + frac * (x1 - x0)
        px, _ = xy(xv, y0)
        d.line([px, H - B, px, H - B + 4], fill='black')
        d.text((px - 10, H - B + 8), f'{xv:.3g}', fill='black')
    d.text((L, 8), title, fill='black')
    d.text(((W - L) // 2 + L - 20, H - 18), xlabel, fill='black')
    for i, (name, s) in enumerate(series.items()):
        c = _COLORS[i % len(_COLORS)]
        if len(s) > 1:
            d.line([xy(*p) for p in s], fill=c, width=2)
        elif s:
            px, py = xy(*s[0])
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=c)
        d.text((W - R - 150, T + 8 + 14 * i), name, fill=c)
    path = Path(path)
    img.save(path)
    return path


def plot_training_curve(records: List[dict], path: Path, title: str = '') -> Optional[Path]:
    """Loss keys against epochs from a `macrl train` log.jsonl; each key scaled to its first value.
    Returns None (and writes nothing) when the log holds no step records."""
    steps = [r for r in records if 'lr' in r and 'epoch' in r]
    keys = sorted({k for r in steps for k in r if k.startswith('loss')})
    series = {}
    for k in keys:
        vals = [(r['epoch'], r[k]) for r in steps if k in r]
        if vals and vals[0][1]:
            series[f'{k} / {vals[0][1]:.3g}'] = [(e, v / vals[0][1]) for e, v in vals]
    knn = [(r['epoch'], r[k] / 100) for r in records for k in r if k.startswith('knn_top1')]
    if knn:
        series['online kNN top-1 / 100'] = knn
    if not series:
        return None
    return line_plot(series, path, title=f'{title} training (relative to start)', xlabel='epoch')
