import math

import pytest
from PIL import Image

from macrl_hub.plot import _COLORS, line_plot, nice_ticks, plot_training_curve, training_series


@pytest.mark.parametrize('lo,hi', [(0.0256, 8.67), (0.26, 1.06), (32.15, 45.5), (-3.0, 7.0), (1e-4, 3e-4), (5, 5)])
def test_nice_ticks_are_round_evenly_spaced_and_cover_the_range(lo, hi):
    t = nice_ticks(lo, hi)
    assert 3 <= len(t) <= 9
    assert t[0] <= lo and t[-1] >= hi
    step = t[1] - t[0]
    assert all(abs((b - a) - step) < 1e-9 * max(1.0, abs(step)) for a, b in zip(t, t[1:]))
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1, 2, 2.5, 5)


def test_nice_ticks_refuses_non_finite():
    with pytest.raises(ValueError, match='non-finite'):
        nice_ticks(0.0, float('nan'))


def _log():
    rows = []
    for step in range(10, 401, 10):
        rows.append(dict(step=step, epoch=step / 100, lr=1e-3, img_per_s=40.0, loss=10.0 - step / 100,
                         loss_cl=8.0 - step / 200, loss_mim=2.0 - step / 400))
        if step % 100 == 0:
            rows.append(dict(step=step, epoch=step / 100, knn_top1_k20=30.0 + step / 20,
                             knn_top1_k200=29.0 + step / 25))
    rows.append(dict(event='end', reason='done', step=400, epochs=4.0))
    return rows


def test_training_series_keeps_each_knn_k_apart():
    losses, knn = training_series(_log())
    assert list(knn) == ['k=20', 'k=200']  # one line per k, not one line zig-zagging between them
    assert knn['k=20'] == [(1.0, 35.0), (2.0, 40.0), (3.0, 45.0), (4.0, 50.0)]
    assert knn['k=200'] == [(1.0, 33.0), (2.0, 37.0), (3.0, 41.0), (4.0, 45.0)]
    assert sorted(losses) == ['loss (start 9.9)', 'loss_cl (start 7.95)', 'loss_mim (start 1.98)']
    assert losses['loss (start 9.9)'][0] == (0.1, 1.0)  # relative to the first value
    assert losses['loss (start 9.9)'][-1] == pytest.approx((4.0, 6.0 / 9.9))


def _colors_in(img):
    return {c for _, c in img.getcolors(1 << 20)}


def test_training_curve_png_has_a_loss_panel_and_a_knn_panel(tmp_path):
    path = plot_training_curve(_log(), tmp_path / 'curve.png', title='x')
    img = Image.open(path).convert('RGB')
    w, h = img.size
    top, bottom = img.crop((0, 0, w, h // 2)), img.crop((0, h // 2, w, h))
    assert {_COLORS[0], _COLORS[1], _COLORS[2]} <= _colors_in(top)  # three losses
    assert {_COLORS[0], _COLORS[1]} <= _colors_in(bottom)  # two kNN lines
    assert _COLORS[2] not in _colors_in(bottom)
    # without kNN rows: one panel only
    only_losses = [r for r in _log() if 'knn_top1_k20' not in r]
    assert Image.open(plot_training_curve(only_losses, tmp_path / 'l.png')).size[1] == h // 2
    assert plot_training_curve([dict(event='end', step=0)], tmp_path / 'none.png') is None
    assert not (tmp_path / 'none.png').exists()


def test_line_plot_refuses_empty_series(tmp_path):
    with pytest.raises(ValueError, match='nothing to plot'):
        line_plot({'a': []}, tmp_path / 'e.png')
    line_plot({'a': [(0, 1), (1, 2)], 'b': [(0.5, 1.5)]}, tmp_path / 'ok.png', title='t', xlabel='epoch')
    assert Image.open(tmp_path / 'ok.png').size == (700, 400)


def test_x_axis_ends_at_the_last_point_not_at_the_next_round_tick(tmp_path):
    # 16 epochs: the line must reach the right edge of the axes (an axis to the next tick, 20, would stop it at 80%)
    from macrl_hub.plot import _LEGEND_W
    img = Image.open(line_plot({'a': [(0.0, 0.0), (16.0, 1.0)]}, tmp_path / 'p.png', size=(700, 400))).convert('RGB')
    right = 700 - _LEGEND_W
    xs = [x for x in range(right + 6) for y in range(400) if img.getpixel((x, y)) == _COLORS[0]]
    assert right - 4 <= max(xs) <= right + 4 and min(xs) <= 60 + 4


def test_faint_lines_are_drawn_pale_in_their_series_colour(tmp_path):
    from macrl_hub.plot import _LEGEND_W, _faint
    seeds = {'b': [[(0.0, 0.5), (1.0, 0.5)], [(0.0, 1.5), (1.0, 1.5)]]}  # below and above b, inside the axes
    img = Image.open(line_plot({'a': [(0, 0), (1, 2)], 'b': [(0, 1), (1, 1)]}, tmp_path / 'f.png',
                               faint=seeds)).convert('RGB')
    axes = _colors_in(img.crop((62, 30, 700 - _LEGEND_W - 2, 400 - 42)))  # inside the axes: no text there
    assert _faint(_COLORS[1]) in axes and _faint(_COLORS[0]) not in axes
    with pytest.raises(ValueError, match="not plotted: \\['c'\\]"):
        line_plot({'a': [(0, 1), (1, 1)]}, tmp_path / 'g.png', faint={'c': [[(0, 1), (1, 2)]]})
