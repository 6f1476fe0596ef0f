"""The paper's comparison in miniature: MACRL vs MAE vs MoCo (and ablations) at equal training.

    python benchmarks/paper_table.py --data ../shared/data/cifar10-jpeg.tar.xz            # ~35 min, 2 cores
    python benchmarks/paper_table.py --data ... --ablations rec_on=visible,all alpha=0.03,0.3 \
        mask_ratio=0.5,0.9 bank_size=0,4096
    python benchmarks/paper_table.py --data ... --scale 10 --model macrl_vit_small_p4_cifar  # real hardware

Every run uses the same encoder, data subset, epochs, batch and seed; only the objective (or the one
ablated option) changes. Each is then evaluated by weighted kNN (k=20, 200) and a linear probe on
cached features. Writes <out>/paper_table.md (tables like the paper's Tables 1-2, with budget,
hardware and wall times), <out>/paper_curves.png (online kNN per epoch) and <out>/paper_table.json.
"""
import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from macrl_hub.card import hardware  # noqa: E402
from macrl_hub.config import TrainConfig  # noqa: E402
from macrl_hub.data import load_dataset  # noqa: E402
from macrl_hub.evaluate import eval_knn_linear, load_encoder  # noqa: E402
from macrl_hub.plot import line_plot  # noqa: E402
from macrl_hub.train import train  # noqa: E402


def _parse_ablation(spec: str):
    key, values = spec.split('=', 1)
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}.get(key)
    if field is None:
        raise SystemExit(f'unknown ablation key {key!r}')
    typ = type(getattr(TrainConfig(), key))
    return key, [typ(v) if typ is not bool else v.lower() in ('1', 'true') for v in values.split(',')]


def evaluate(enc, data: str, splits, probe_epochs: int) -> dict:
    """kNN (k=20, 200) and a linear probe from one pass of feature extraction."""
    ev = eval_knn_linear(enc, data, epochs=probe_epochs, splits=splits)
    return dict(knn20=ev['knn_top1_k20'], knn200=ev['knn_top1_k200'], linear=ev['linear_top1'])


def run_one(name: str, base: dict, overrides: dict, args, out: Path, splits, cache: dict) -> dict:
    """Train one objective/ablation and evaluate it; 'random' evaluates the untrained encoder (the floor).

    A row of an earlier paper_table.json made with the same settings is reused instead of retrained."""
    if name in cache:
        print(f'reusing {name} from {out / "paper_table.json"} (same settings)', flush=True)
        return cache[name]
    run_dir = out / 'runs' / name
    if overrides.get('objective') == 'random':
        torch.manual_seed(args.seed)
        enc = timm.create_model(args.model, **json.loads(args.model_args or '{}'))
        row = dict(name=name, **overrides, epochs=0, steps=0, train_min=0.0,
                   **evaluate(enc, args.data, splits, args.probe_epochs), curve=[])
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # this script's own scratch run, never a user's
        cfg = TrainConfig(**{**base, **overrides, 'out': str(run_dir)})
        t0 = time.time()
        res = train(cfg)
        train_time = time.time() - t0
        ev = evaluate(load_encoder(res['checkpoint']), args.data, splits, args.probe_epochs)
        log = [json.loads(l) for l in (Path(cfg.out) / 'log.jsonl').read_text().splitlines()]
        curve = [(r['epoch'], r['knn_top1_k200']) for r in log if 'knn_top1_k200' in r]
        row = dict(name=name, **overrides, epochs=cfg.epochs, steps=res['step'],
                   train_min=round(train_time / 60, 1), **ev, curve=curve)
    print(json.dumps({k: v for k, v in row.items() if k != 'curve'}), flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True)
    p.add_argument('--model', default='macrl_vit_tiny_p4_cifar')
    p.add_argument('--model-args', default='', help='extra timm kwargs as JSON (e.g. a smoke test: {"depth": 2})')
    p.add_argument('--num-train', type=int, default=4000, help='pretraining subset of the train split')
    p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--blr', type=float, default=1e-3)
    p.add_argument('--bank-size', type=int, default=2048,
                   help="~1/4 epoch of keys on the 4,000-image subset (the trainer's 16,384 is ~1/6 epoch of CIFAR-10); "
                        'a bank holding more than an epoch keeps stale keys of the query image as negatives')
    p.add_argument('--scale', type=float, default=1.0, help='multiply epochs and num-train (up to the full set)')
    p.add_argument('--objectives', nargs='+', default=['random', 'macrl', 'mae', 'moco'],
                   help='random: the untrained encoder, the floor every method must clear')
    p.add_argument('--ablations', nargs='*', default=[], help='key=v1,v2 ... (MACRL runs with one option changed)')
    p.add_argument('--eval-train', type=int, default=10000, help='kNN bank / probe train images')
    p.add_argument('--eval-test', type=int, default=5000)
    p.add_argument('--probe-epochs', type=int, default=50)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='benchmarks/results')
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.epochs = max(1, round(args.epochs * args.scale))
    base = dict(model=args.model, model_args=args.model_args, data=args.data, num_train=int(args.num_train * args.scale), epochs=args.epochs,
                batch_size=args.batch_size, blr=args.blr, bank_size=args.bank_size, warmup_epochs=min(1.0, args.epochs / 4), seed=args.seed,
                knn_every=1, knn_train=2000, knn_test=1000, progress=False, log_every=50, ckpt_every_min=30)
    settings = dict(base, probe_epochs=args.probe_epochs, eval_train=args.eval_train, eval_test=args.eval_test)
    cache = {}
    if (out / 'paper_table.json').is_file():
        old = json.loads((out / 'paper_table.json').read_text())
        if old.get('settings') == settings:
            cache = {r['name']: r for r in old['rows'] + [r for _, rs in old['ablations'] for r in rs]}
    t_all = time.time()
    splits = (load_dataset(args.data, 'train').subset(args.eval_train, seed=args.seed),
              load_dataset(args.data, 'test').subset(args.eval_test, seed=args.seed))
    rows = [run_one(obj, base, {'objective': obj}, args, out, splits, cache) for obj in args.objectives]
    ablations = []
    for spec in args.ablations:
        key, values = _parse_ablation(spec)
        ablations.append((key, [run_one(f'macrl_{key}={v}', base, {'objective': 'macrl', key: v}, args, out, splits,
                                         cache)
                                for v in values]))
    total = (time.time() - t_all) / 60
    every_row = rows + [r for _, rs in ablations for r in rs]
    reused = [r['name'] for r in every_row if r['name'] in cache]
    cmd = 'python benchmarks/paper_table.py ' + shlex.join(sys.argv[1:])
    md = [f'# MACRL vs MAE vs MoCo, in miniature', '',
          f'{args.model}, {base["num_train"]} CIFAR-10 train images (fixed random subset, seed {args.seed}), '
          f'{args.epochs} epochs at batch {args.batch_size}, blr {args.blr}, bank {args.bank_size}; evaluation: weighted kNN and a linear '
          f'probe ({args.probe_epochs} epochs, cached features) with {args.eval_train} train / {args.eval_test} test '
          f'images. Hardware: {hardware()}. Pretraining wall time per row below; this invocation took {total:.0f} min'
          + (f' (reused {len(reused)} rows of an earlier invocation with the same settings: {", ".join(reused)})'
             if reused else '') + '.', '', f'Command: `{cmd}`', '',
          '| objective | steps | pretrain min | kNN k=20 | kNN k=200 | linear |', '|---|---|---|---|---|---|']
    md += [f'| {r["name"]} | {r["steps"]} | {r["train_min"]} | {r["knn20"]:.2f} | {r["knn200"]:.2f} | '
           f'{r["linear"]:.2f} |' for r in rows]
    for key, rs in ablations:
        md += ['', f'## Ablation: {key}', '', f'| {key} | kNN k=20 | kNN k=200 | linear | pretrain min |',
               '|---|---|---|---|---|']
        ref = next((r for r in rows if r['name'] == 'macrl'), None)
        if ref is not None:  # the default value: the macrl row of the main table
            rs = [dict(ref, **{key: f'{getattr(TrainConfig(**base), key)} (default)'})] + rs
        md += [f'| {r[key]} | {r["knn20"]:.2f} | {r["knn200"]:.2f} | {r["linear"]:.2f} | {r["train_min"]} |' for r in rs]
    (out / 'paper_table.md').write_text('\n'.join(md) + '\n')
    (out / 'paper_table.json').write_text(json.dumps(dict(rows=rows, ablations=ablations, command=cmd, settings=settings), indent=1))
    series = {r['name']: r['curve'] for r in every_row if r['curve']}
    if series:
        line_plot(series, out / 'paper_curves.png', title='online kNN top-1 (k=200, 2k bank, 1k held out)',
                  xlabel='epoch')
    print('\n'.join(md))


if __name__ == '__main__':
    main()
