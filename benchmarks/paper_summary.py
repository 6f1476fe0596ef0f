"""The paper's comparison across budgets: one summary from several `paper_table.py` outputs (README, "The paper in
miniature"). Each folder holds a paper_table.json; rows are grouped by the table's budget (MACRL-epochs of FLOPs)
and by seed, so a seed trained by a later invocation in another folder joins its row (the first folder given wins
where two hold the same row and seed).

    python benchmarks/paper_summary.py benchmarks/results benchmarks/results/alpha_seed1 \
        benchmarks/results/epochs2 benchmarks/results/epochs2_alpha_seed1 \
        benchmarks/results/epochs4 benchmarks/results/epochs4_alpha_seed1 [--out summary.md]

Prints two Markdown tables: each method's kNN k=200 / linear probe top-1 per budget (mean over seeds, each seed in
brackets), and each ablation's difference from MACRL's defaults at the same budget and seed.
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

MAIN = ('random', 'macrl', 'mae', 'moco')
LABELS = {'random': 'random init', 'macrl': 'MACRL (alpha 0.1)', 'mae': 'MAE', 'moco': 'MoCo'}

Entry = Tuple[float, float]  # (kNN k=200, linear) top-1 in %
#: what must agree between two tables for their rows to share a column (besides the budget, `epochs`)
SAME = ('n_train', 'equal', 'probe_epochs', 'eval_train', 'eval_test')
SAME_BASE = ('model', 'model_args', 'num_train', 'batch_size', 'blr', 'bank_size', 'alpha')


def _protocol(settings: dict) -> dict:
    return dict({k: settings.get(k) for k in SAME}, **{k: settings.get('base', {}).get(k) for k in SAME_BASE})


def collect(folders: List[Path]) -> Tuple[Dict[float, Dict[str, Dict[int, Entry]]], Dict[float, float]]:
    """{budget epochs: {row label: {seed: (knn200, linear)}}} and {budget epochs: PFLOP per row}."""
    table: Dict[float, Dict[str, Dict[int, Entry]]] = {}
    pflops: Dict[float, float] = {}
    protocol: Dict[float, Tuple[Path, dict]] = {}
    for folder in folders:
        path = folder / 'paper_table.json' if folder.is_dir() else folder
        if not path.is_file():
            raise SystemExit(f'paper_summary: {path} not found (give folders written by paper_table.py --out)')
        d = json.loads(path.read_text())
        budget = float(d['settings']['epochs'])
        mine = _protocol(d['settings'])
        first, same = protocol.setdefault(budget, (path, mine))
        differ = {k: (same[k], v) for k, v in mine.items() if v != same[k]}
        if differ:  # another protocol (data, model, evaluation): its rows are not the same measurement
            raise SystemExit(f'paper_summary: {path} and {first} both train {budget:g} MACRL-epochs but differ in '
                             + ', '.join(f'{k} ({a!r} vs {b!r})' for k, (a, b) in differ.items())
                             + ': summarise them separately')
        rows = [(name, r) for name, rs in d['rows'].items() for r in rs]
        rows += [(f'{key}={r["plan_cfg"][key]}', r) for key, rs in d['ablations'] for r in rs]
        for label, r in rows:
            if r.get('knn200') is None or r.get('linear') is None:
                continue  # a row not evaluated yet
            if r['pflops']:
                pflops[budget] = r['pflops']
            table.setdefault(budget, {}).setdefault(label, {}).setdefault(int(r['plan_cfg']['seed']),
                                                                          (r['knn200'], r['linear']))
    return table, pflops


def _cell(by_seed: Dict[int, Entry], i: int) -> str:
    """Metric i (0: kNN k=200, 1: linear) as 'mean (seed 0 / seed 1 ...)', or 'value (seed s)' for one seed."""
    seeds = sorted(by_seed)
    mean = sum(by_seed[s][i] for s in seeds) / len(seeds)
    if len(seeds) == 1:
        return f'{mean:.2f} (seed {seeds[0]})'
    return f'{mean:.2f} (' + ' / '.join(f'{by_seed[s][i]:.2f}' for s in seeds) + ')'


def summary(folders: List[Path]) -> str:
    table, pflops = collect(folders)
    budgets = sorted(table)
    head = ' | '.join(f'{b:g} MACRL-epoch{"s" if b != 1 else ""} ({pflops.get(b, 0):.2f} PFLOP)' for b in budgets)
    labels = list(MAIN) + sorted({k for b in budgets for k in table[b] if k not in MAIN})
    lines: List[str] = []
    seeds = sorted({s for b in budgets for row in table[b].values() for s in row})
    for i, metric in enumerate(('kNN k=200', 'linear probe')):
        lines += [f'{metric} top-1 (%), mean of the seeds (' + ' / '.join(f'seed {s}' for s in seeds) + '):', '',
                  f'| row | {head} |',
                  '|---|' + '---|' * len(budgets)]
        for label in labels:
            cells = [_cell(table[b][label], i) if label in table[b] else '' for b in budgets]
            lines.append(f'| {LABELS.get(label, "MACRL, " + label)} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    lines += ['Each ablation against MACRL\'s defaults at the same budget and seed (kNN k=200 / linear, points; '
              '+ = better):', '', f'| MACRL with | {head} |', '|---|' + '---|' * len(budgets)]
    for label in labels:
        if label in MAIN:
            continue
        cells = []
        for b in budgets:
            base, mine = table[b].get('macrl', {}), table[b].get(label, {})
            cells.append(' ; '.join(f'{mine[s][0] - base[s][0]:+.2f} / {mine[s][1] - base[s][1]:+.2f} (seed {s})'
                                    for s in sorted(set(base) & set(mine))))
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folders', nargs='+', type=Path)
    p.add_argument('--out', type=Path, default=None, help='also write the tables to this Markdown file')
    a = p.parse_args(argv)
    text = summary(a.folders)
    print(text, end='')
    if a.out:
        a.out.write_text(text)
    return text


if __name__ == '__main__':
    main()
