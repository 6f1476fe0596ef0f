"""The paper's comparison in miniature: MACRL vs MAE vs MoCo (and ablations) at equal training compute.

    python benchmarks/paper_table.py --data ../shared/data/cifar10-jpeg.tar.xz --seeds 0 1      # CPU: ~90 min, 2 cores
    python benchmarks/paper_table.py --data ... --ablations alpha=1 rec_on=visible bank_size=0,65536 mask_ratio=0.9
    bash benchmarks/gpu_paper_table.sh       # on a GPU, one device call (benchmarks/gpu_paper_table_rehearse.sh first)
    python benchmarks/paper_table.py --replot --out benchmarks/results/epochs2   # redraw the curves from the JSON

Budget: `--equal flops` (default) gives every row the training FLOPs that MACRL spends in `--epochs` epochs of
the whole train split (FLOPs per image counted by torch's FlopCounterMode for each row's own configuration), so
MAE, whose step costs ~0.54x MACRL's, trains ~1.8x the steps and MoCo (~1.8x MACRL's cost) ~0.55x. Equal FLOPs
rather than equal wall-clock because a shared 2-core machine's minutes depend on what else runs; the curves are
drawn against both. `--equal steps` gives every row the same number of steps instead.

Every row uses the same encoder, batch, lr schedule shape and seed; only the objective (or the one ablated
option) changes. `--seeds` repeats the main rows (ablations run at the first seed) and the table shows the mean and
each seed. Evaluation: weighted kNN (k=20, 200) with an `--eval-train` image bank and a linear probe (cached
features) trained on the same images, both scored on `--eval-test` test images (default: all 10,000).
The online kNN monitor (2,000-image bank, 1,000 held-out test images) draws the learning curves.

Writes, after every row (a session that ends mid-way keeps what finished): <out>/paper_table.md,
<out>/paper_table.json, <out>/paper_curves.png (kNN against training minutes) and <out>/paper_curves_flops.png
(against training PFLOPs; each method the mean of its seeds, the seeds faint behind it). A row whose settings equal
one already in paper_table.json is reused, not retrained, so a table can grow across sessions and machines (each
row keeps its own hardware and minutes).
A row whose training was interrupted (a session that ended) continues from its scratch run's last checkpoint
(one per epoch, and every 30 min) when rerun with the same settings.
"""
import argparse
import dataclasses
import json
import math
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from macrl_hub.card import hardware  # noqa: E402
from macrl_hub.config import TrainConfig  # noqa: E402
from macrl_hub.data import load_dataset  # noqa: E402
from macrl_hub.evaluate import eval_knn_linear, load_encoder  # noqa: E402
from macrl_hub.plot import line_plot  # noqa: E402
from macrl_hub.train import read_log, step_flops, train  # noqa: E402

METRICS = ('knn20', 'knn200', 'linear')


def _parse_ablation(spec: str):
    key, values = spec.split('=', 1)
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}.get(key)
    if field is None:
        raise SystemExit(f'unknown ablation key {key!r}')
    typ = type(getattr(TrainConfig(), key))
    return key, [typ(v) if typ is not bool else v.lower() in ('1', 'true') for v in values.split(',')]


def evaluate(enc, data: str, splits, probe_epochs: int) -> dict:
    """kNN (k=20, 200) and a linear probe from one pass of feature extraction (on the GPU where there is one)."""
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    ev = eval_knn_linear(enc.to(device), data, epochs=probe_epochs, splits=splits, device=device)
    return dict(knn20=ev['knn_top1_k20'], knn200=ev['knn_top1_k200'], linear=ev['linear_top1'])


def plan(name: str, overrides: Dict[str, Any], base: Dict[str, Any], args, n_train: int, ref_flops: float) -> dict:
    """The training config of one row (without its output folder) and its compute: under --equal flops, the steps
    that spend MACRL's budget (`--epochs` epochs at MACRL's FLOPs per image) at this row's own FLOPs per image."""
    cfg = dict(base, **overrides)
    batch = cfg['batch_size']  # the row's own (a batch_size ablation changes it)
    steps_per_epoch = n_train // batch
    if overrides.get('objective') == 'random':
        return dict(name=name, cfg=cfg, steps=0, flops_per_img=0.0)
    flops = step_flops(TrainConfig(**{k: v for k, v in cfg.items() if k != 'data'}))
    ref_steps = args.epochs * (n_train // args.batch_size)  # MACRL's, at the table's --batch-size
    budget = ref_steps * args.batch_size * ref_flops  # the reference's training FLOPs
    steps = round(budget / (flops * batch)) if args.equal == 'flops' else round(ref_steps)
    cfg['total_steps'] = max(1, steps)
    cfg['warmup_epochs'] = min(args.warmup_epochs, 0.5 * steps / steps_per_epoch)
    return dict(name=name, cfg=cfg, steps=steps, flops_per_img=flops)


def _same_settings(run_dir: Path, cfg: dict) -> bool:
    """Whether the scratch run in run_dir was started with exactly these settings."""
    try:
        saved = json.loads((run_dir / 'config.json').read_text())
    except (OSError, ValueError):
        return False
    return all(saved.get(k) == v for k, v in cfg.items())


def _finished_run(run_dir: Path, cfg: dict):
    """The log's end record of a scratch run with exactly these settings that completed its schedule, else None."""
    try:
        ends = [r for r in read_log(run_dir / 'log.jsonl') if r.get('event') == 'end']
    except (OSError, ValueError):
        return None
    if not _same_settings(run_dir, cfg) or not ends:
        return None
    end = ends[-1]
    ok = end.get('reason') == 'done' and end.get('step') == cfg['total_steps'] and Path(end['checkpoint']).is_file()
    return end if ok else None


def run_one(p: dict, args, out: Path, splits, n_train: int) -> dict:
    """Train one row and evaluate it; 'random' evaluates the untrained encoder (the floor every method must clear)."""
    cfg = p['cfg']
    run_dir = Path(args.runs_dir or out / 'runs') / p['name']
    if cfg['objective'] == 'random':
        torch.manual_seed(cfg['seed'])
        enc = timm.create_model(args.model, **json.loads(args.model_args or '{}'))
        return dict(name=p['name'], epochs=0.0, train_min=0.0, pflops=0.0, hardware=hardware(),
                    **evaluate(enc, args.data, splits, args.probe_epochs), curve=[])
    done = _finished_run(run_dir, cfg)
    if done is not None:  # trained to the end by an invocation that stopped before writing its row: evaluate it
        print(f'{p["name"]}: reusing the finished training run in {run_dir} (same settings)', flush=True)
        res, train_min = dict(step=done['step'], checkpoint=done['checkpoint']), done['train_time'] / 60
    else:  # an interrupted run with these settings continues from its last checkpoint (exact: see train.py)
        resume = _same_settings(run_dir, cfg) and (run_dir / 'checkpoint.pth').is_file()
        if resume:
            print(f'{p["name"]}: resuming the interrupted training run in {run_dir} (same settings)', flush=True)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # this script's own scratch run, never a user's
        res = train(TrainConfig(**cfg, out=str(run_dir), resume='auto' if resume else ''))
        train_min = res['train_time'] / 60  # across invocations when resumed
    ev = evaluate(load_encoder(res['checkpoint']), args.data, splits, args.probe_epochs)
    batch = cfg.get('batch_size', args.batch_size)  # the row's own
    img = batch * p['flops_per_img']  # FLOPs per step
    curve = [dict(step=r['step'], minutes=round((r['time'] - r.get('monitor_s', 0.0)) / 60, 2),
                  pflops=round(r['step'] * img / 1e15, 3), knn200=r['knn_top1_k200'])
             for r in read_log(run_dir / 'log.jsonl') if 'knn_top1_k200' in r]
    return dict(name=p['name'], epochs=round(res['step'] * batch / n_train, 2),
                train_min=round(train_min, 1), pflops=round(res['step'] * img / 1e15, 2), hardware=hardware(),
                **ev, curve=curve)


def _fmt(rows: List[dict], key: str) -> str:
    """'mean (seed values)' over the seeds of one row."""
    vals = [r[key] for r in rows]
    if len(vals) == 1:
        return f'{vals[0]:.2f}'
    return f'{statistics.mean(vals):.2f} ({" / ".join(f"{v:.2f}" for v in vals)})'


def curve_series(main_rows: Dict[str, List[dict]], ablations, x: str):
    """The online-kNN curves against `x` ('minutes' or 'pflops'): one line per main row, the mean over its seeds
    point by point (its seeds returned apart, to be drawn faint behind it), and one per ablation row."""
    series, seeds = {}, {}
    for obj, rs in main_rows.items():
        curves = [[(c[x], c['knn200']) for c in r['curve']] for r in rs if r['curve']]
        if len(curves) == 1:
            series[obj] = curves[0]
        elif curves:  # the seeds' monitors run at the same steps; minutes differ a little and are averaged too
            name = f'{obj} (mean of {len(curves)} seeds)'
            series[name] = [(statistics.mean(p[0] for p in pts), statistics.mean(p[1] for p in pts))
                            for pts in zip(*curves)]
            seeds[name] = curves
    for _, rs in ablations:
        series.update({r['name']: [(c[x], c['knn200']) for c in r['curve']] for r in rs if r['curve']})
    return series, seeds


def write_outputs(out: Path, args, main_rows: Dict[str, List[dict]], ablations, settings: dict, cmd: str,
                  t_all: float) -> None:
    (out / 'paper_table.json').write_text(json.dumps(dict(rows=main_rows, ablations=ablations, command=cmd,
                                                          settings=settings), indent=1))  # first: rows are never lost
    every = [r for rs in main_rows.values() for r in rs] + [r for _, rs in ablations for r in rs]
    hw = sorted({r['hardware'] for r in every})
    seeds = ', '.join(str(s) for s in args.seeds)
    md = ['# MACRL vs MAE vs MoCo, in miniature', '',
          f'{args.model}, {settings["n_train"]} CIFAR-10 train images, batch {args.batch_size}, blr {args.blr}, '
          f'bank {settings["base"]["bank_size"]}, alpha {settings["base"]["alpha"]}. Budget: '
          + (f'equal training FLOPs, those of MACRL in {args.epochs:g} epochs' if args.equal == 'flops' else
             f'equal steps ({args.epochs:g} epochs)') +
          f'. Seeds {seeds} for the main rows (mean, then each seed). Evaluation: weighted kNN and a linear probe '
          f'({args.probe_epochs} epochs, cached features), {args.eval_train} train images as bank / probe training '
          f'set, scored on {args.eval_test} test images. Hardware: {"; ".join(hw)}. This invocation: '
          f'{(time.time() - t_all) / 60:.0f} min.', '', f'Command: `{cmd}`', '',
          '| objective | GFLOP/img | epochs | PFLOP | pretrain min | kNN k=20 | kNN k=200 | linear |',
          '|---|---|---|---|---|---|---|---|']
    for name, rs in main_rows.items():
        if rs:
            md.append(f'| {name} | {rs[0]["flops_per_img"] / 1e9:.2f} | {rs[0]["epochs"]:g} | {rs[0]["pflops"]:g} | '
                      f'{_fmt(rs, "train_min")} | ' + ' | '.join(_fmt(rs, k) for k in METRICS) + ' |')
    for key, rs in ablations:
        if not rs:
            continue
        md += ['', f'## Ablation: {key} (seed {args.seeds[0]})', '',
               f'| {key} | epochs | kNN k=20 | kNN k=200 | linear | pretrain min |', '|---|---|---|---|---|---|']
        ref = main_rows.get('macrl', [])[:1]
        default = settings['base'].get(key, getattr(TrainConfig(), key))  # a field this script has no flag for
        rs = [dict(r, value=f'{default} (default)') for r in ref] + rs
        md += [f'| {r["value"]} | {r["epochs"]:g} | {r["knn20"]:.2f} | {r["knn200"]:.2f} | {r["linear"]:.2f} | '
               f'{r["train_min"]} |' for r in rs]
    (out / 'paper_table.md').write_text('\n'.join(md) + '\n')
    plot_curves(out, main_rows, ablations)
    print('\n'.join(md), flush=True)


def plot_curves(out: Path, main_rows: Dict[str, List[dict]], ablations) -> None:
    """<out>/paper_curves.png (kNN against minutes) and paper_curves_flops.png (against PFLOPs)."""
    for x, path, label in (('minutes', 'paper_curves.png', 'training minutes'),
                           ('pflops', 'paper_curves_flops.png', 'training PFLOP')):
        series, seeds = curve_series(main_rows, ablations, x)
        if series:
            line_plot(series, out / path, title='online kNN top-1 (k=200, 2k bank, 1k test images)', xlabel=label,
                      faint=seeds)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', help='CIFAR-10: a torchvision name, folder or archive (required unless --replot)')
    p.add_argument('--model', default='macrl_vit_tiny_p4_cifar')
    p.add_argument('--model-args', default='', help='extra timm kwargs as JSON (e.g. a smoke test: {"depth": 2})')
    p.add_argument('--num-train', type=int, default=0, help='pretraining subset of the train split (0: all)')
    p.add_argument('--epochs', type=float, default=1.0, help="the budget: MACRL's epochs (fractions allowed)")
    p.add_argument('--equal', choices=('flops', 'steps'), default='flops')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--blr', type=float, default=1e-3)
    p.add_argument('--warmup-epochs', type=float, default=0.25, help='at most half of each row\'s steps')
    p.add_argument('--bank-size', type=int, default=TrainConfig.bank_size)
    p.add_argument('--alpha', type=float, default=TrainConfig.alpha)
    p.add_argument('--objectives', nargs='+', default=['random', 'macrl', 'mae', 'moco'],
                   help='random: the untrained encoder, the floor every method must clear')
    p.add_argument('--seeds', type=int, nargs='+', default=[0])
    p.add_argument('--ablations', nargs='*', default=[], help='key=v1,v2 ... (MACRL runs with one option changed)')
    p.add_argument('--eval-train', type=int, default=10000, help='kNN bank / probe train images')
    p.add_argument('--eval-test', type=int, default=10000)
    p.add_argument('--probe-epochs', type=int, default=50)
    p.add_argument('--knn-every', type=float, default=0.25, help='online kNN monitor every N epochs')
    p.add_argument('--precision', default='auto')
    p.add_argument('--out', default='benchmarks/results')
    p.add_argument('--runs-dir', default='', help="where each row's scratch training run goes (default <out>/runs)")
    p.add_argument('--compile', action='store_true', help='torch.compile the blocks (each row compiles anew)')
    p.add_argument('--replot', action='store_true',
                   help="only redraw <out>'s curves from its paper_table.json (no data, no training)")
    args = p.parse_args()
    out = Path(args.out)
    if args.replot:
        old = json.loads((out / 'paper_table.json').read_text())
        plot_curves(out, old['rows'], old['ablations'])
        print(f'redrew {out / "paper_curves.png"} and {out / "paper_curves_flops.png"}')
        return
    if not args.data:
        p.error('--data is required (CIFAR-10: cifar10, a folder or an archive such as cifar10-jpeg.tar.xz)')
    out.mkdir(parents=True, exist_ok=True)
    train_split = load_dataset(args.data, 'train')  # decoded once: its size, then the evaluation subset
    n_train = args.num_train or len(train_split)
    base = dict(model=args.model, model_args=args.model_args, data=args.data, num_train=args.num_train,
                epochs=max(1, math.ceil(args.epochs)), batch_size=args.batch_size, blr=args.blr,
                bank_size=args.bank_size, alpha=args.alpha, seed=args.seeds[0], precision=args.precision,
                knn_every=args.knn_every, knn_train=2000, knn_test=1000, progress=False, log_every=25,
                ckpt_every_min=30, **({'compile': True} if args.compile else {}))  # only where asked: row keys
    evals = dict(probe_epochs=args.probe_epochs, eval_train=args.eval_train, eval_test=args.eval_test)
    settings = dict(base=base, n_train=n_train, equal=args.equal, epochs=args.epochs, **evals)
    ref_flops = step_flops(TrainConfig(**{k: v for k, v in base.items() if k != 'data'}, objective='macrl'))
    plans = [(obj, plan(obj if seed == args.seeds[0] else f'{obj} (seed {seed})', {'objective': obj, 'seed': seed},
                        base, args, n_train, ref_flops))
             for seed in args.seeds for obj in args.objectives]  # (objective, plan), in table order
    abl_plans = []
    for spec in args.ablations:
        key, values = _parse_ablation(spec)
        abl_plans.append((key, [dict(plan(f'macrl_{key}={v}', {'objective': 'macrl', key: v}, base, args, n_train,
                                          ref_flops), value=v) for v in values]))

    # rows of an earlier invocation with identical training config and evaluation settings are reused
    cache = {}
    if (out / 'paper_table.json').is_file():
        old = json.loads((out / 'paper_table.json').read_text())
        if isinstance(old.get('rows'), dict):
            for r in [r for rs in old['rows'].values() for r in rs] + [r for _, rs in old['ablations'] for r in rs]:
                cache[json.dumps(dict(r['plan_cfg'], **r['evals']), sort_keys=True)] = r
    t_all = time.time()
    cmd = 'python benchmarks/paper_table.py ' + shlex.join(sys.argv[1:])
    splits = (train_split.subset(args.eval_train, seed=0),
              load_dataset(args.data, 'test').subset(args.eval_test, seed=0))
    main_rows: Dict[str, List[dict]] = {obj: [] for obj in args.objectives}
    ablations = [(key, []) for key, _ in abl_plans]

    def do(pl: dict) -> dict:
        key = json.dumps(dict(pl['cfg'], **evals), sort_keys=True)
        if key in cache:
            print(f'reusing {pl["name"]} from {out / "paper_table.json"} (same settings)', flush=True)
            return cache[key]
        row = dict(run_one(pl, args, out, splits, n_train), steps=pl['steps'], flops_per_img=pl['flops_per_img'],
                   plan_cfg=pl['cfg'], evals=evals)
        print(json.dumps({k: v for k, v in row.items() if k not in ('curve', 'plan_cfg')}), flush=True)
        return row

    for obj, pl in plans:
        main_rows[obj].append(do(pl))
        write_outputs(out, args, main_rows, ablations, settings, cmd, t_all)
    for (key, pls), (_, rows) in zip(abl_plans, ablations):
        for pl in pls:
            rows.append(dict(do(pl), value=pl['value']))
            write_outputs(out, args, main_rows, ablations, settings, cmd, t_all)


if __name__ == '__main__':
    from macrl_hub.train import TrainingInterrupted
    try:
        main()
    except TrainingInterrupted as e:  # SIGINT / SIGTERM (e.g. the GPU job's `timeout`) during a row's training
        print(f'paper_table: {e} (that row resumes from it when the same command is run again; finished rows are '
              'in the table already)', file=sys.stderr)
        sys.exit(128 + e.signum)
