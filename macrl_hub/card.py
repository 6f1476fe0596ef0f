"""Model cards: Hub metadata (huggingface_hub's ModelCardData + EvalResult) and a body built only from
the checkpoint, the eval JSON lines and the training log. Nothing on a card is typed by hand."""
import platform
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = ['write_model_card', 'train_command', 'hardware', 'public_data_arg', 'METRIC_NAMES', 'metric_name',
           'parse_metric_name', 'model_details', 'model_stats']

_DATASETS = {'cifar10': 'cifar10', 'cifar100': 'cifar100', 'tinyimagenet': 'zh-plus/tiny-imagenet',
             'imagenette': 'frgfm/imagenette', 'imagewoof': 'frgfm/imagewoof'}
#: eval-JSON key -> the metric's name on a card (its model-index `name`); `parse_metric_name` reads one back
METRIC_NAMES = {'knn_top1_k20': 'kNN top-1 (k=20)', 'knn_top1_k200': 'kNN top-1 (k=200)',
                'linear_top1': 'linear probe top-1', 'finetune_top1': 'fine-tune top-1',
                'classify_top1': 'top-1 of this classifier as shipped'}
_KEYS = {name: key for key, name in METRIC_NAMES.items()}
CITATION = '''@article{yao2022macrl,
  title={Masked Contrastive Representation Learning},
  author={Yao, Yuchong and Desai, Nandakishor and Palaniswami, Marimuthu},
  journal={arXiv preprint arXiv:2211.06012},
  year={2022}
}'''


def metric_name(key: str, ev: Dict[str, Any]) -> str:
    """The metric's name on the card; a fine-tune says how long it ran (a short CPU fine-tune is not the paper's)."""
    if key == 'finetune_top1' and ev.get('finetune_epochs'):
        return f'{METRIC_NAMES[key]} ({ev["finetune_epochs"]} epochs)'
    return METRIC_NAMES[key]


def parse_metric_name(name: str) -> Optional[Tuple[str, Optional[int]]]:
    """A card's metric name back to (eval-JSON key, fine-tune epochs or None), the inverse of `metric_name`:
    'fine-tune top-1 (4 epochs)' -> ('finetune_top1', 4); a name that is not ours -> None."""
    m = re.fullmatch(r'(.+?)(?: \((\d+) epochs\))?', name)
    key = _KEYS.get(m.group(1))
    return None if key is None else (key, int(m.group(2)) if m.group(2) else None)


def public_data_arg(command: str) -> str:
    """`--data ../some/local/dir/cifar10-jpeg.tar.xz` -> `--data path/to/cifar10-jpeg.tar.xz`: a card's reader has
    none of our local folders, only the same file or folder under a path of their own (torchvision names such as
    `cifar10` stay as they are)."""
    return re.sub(r'(--data[ =])(\S*/)([^/\s]+)', lambda m: m.group(1) + 'path/to/' + m.group(3), command)


def train_command(cfg: Dict[str, Any], stop_step: Optional[int] = None, resumed: bool = False) -> str:
    """The `macrl train` command line that reproduces a run's config: its --recipe, then every flag whose value
    differs from what that recipe gives (a --recipe paper run that set a value back to fast's keeps that flag).

    With `stop_step` (a run that stopped before its schedule ended, e.g. on a time budget, possibly over several
    resumed invocations) the per-invocation --time-budget is replaced by `--max-steps stop_step`, which stops a
    fresh run at the same step of the same schedule. A run that finished its schedule over several invocations
    (`resumed`) drops its last invocation's --time-budget: one fresh run of the whole schedule reproduces it; so does
    a run whose schedule was fitted to a budget (--total-steps is given), on any machine."""
    from .recipes import RECIPES, config as recipe_config
    recipe = cfg.get('recipe') if cfg.get('recipe') in RECIPES else 'fast'
    default = recipe_config(recipe)  # what `--recipe R` alone gives: a flag is written where the run differs
    cfg = dict(cfg)
    if stop_step is not None or resumed:  # the last invocation's limits say nothing about the whole run
        cfg.pop('time_budget', None)
        cfg.pop('max_steps', None)
    if stop_step is not None:
        cfg['max_steps'] = stop_step
    if cfg.get('total_steps'):  # the schedule's length is given: nothing left to fit to a time budget, and a
        cfg.pop('fit_budget', None)  # budget would only stop a slower machine short of it (where the run stopped
        cfg.pop('time_budget', None)  # early, --max-steps above says where)
    parts = ['macrl train']
    for k, v in cfg.items():
        if not hasattr(default, k) or k in ('progress', 'resume') or (k == 'recipe' and v == 'fast'):
            continue
        if getattr(default, k) == v and k not in ('model', 'recipe'):
            continue
        flag = '--' + k.replace('_', '-')
        if isinstance(v, bool):
            parts.append(flag if v else f'--no-{k.replace("_", "-")}')
        elif isinstance(v, (list, tuple)):
            parts.append(f'{flag} ' + ' '.join(map(str, v)))
        else:
            sval = str(v)
            parts.append(f"{flag} '{sval}'" if any(c in sval for c in ' {}"') else f'{flag} {sval}')
    return public_out_arg(public_data_arg(' \\\n    '.join(parts)))


def public_paths(command: str) -> str:
    """A command as a card shows it: --data as `path/to/<name>`, --out as `runs/<name>`, and an absolute path given
    to --model / --json-out / --save-head as its run folder and file (`/home/me/scratch/run1/checkpoint.pth` ->
    `run1/checkpoint.pth`), or the file alone two levels below the root (`/home/me/h.safetensors` -> `h.safetensors`,
    not the user's name): the writer's machine's folders are nothing a reader has."""
    def short(m: 're.Match') -> str:
        parts = Path(m.group(2)).parts  # ('/', 'home', 'me', 'scratch', 'run1', 'checkpoint.pth')
        return m.group(1) + '/'.join(parts[-2:] if len(parts) >= 5 else parts[-1:])
    command = re.sub(r'(--(?:model|json-out|save-head)[ =])(/\S+)', short, command)
    return public_out_arg(public_data_arg(command))


def public_out_arg(command: str) -> str:
    """`--out /home/me/scratch/run1` -> `--out runs/run1`: an absolute run folder is the writer's machine's, not
    something a card's reader has."""
    command = re.sub(r"(--out[ =])'/[^']*?([^/']+)/?'", lambda m: f"{m.group(1)}'runs/{m.group(2)}'", command)
    return re.sub(r'(--out[ =])/\S*?([^/\s]+)/?(?=\s|$)', lambda m: m.group(1) + 'runs/' + m.group(2), command)


def features_desc(config: Dict[str, Any]) -> str:
    """What the encoder's features are, from config.json (timm VisionTransformer's global_pool and fc_norm)."""
    pool = config.get('global_pool', config['model_args'].get('global_pool', 'token'))
    fc_norm = config['model_args'].get('fc_norm')
    if fc_norm is None:  # timm's default: a norm after pooling for the pooled modes, before it for the token
        fc_norm = pool in ('avg', 'avgmax', 'max')
    what = {'avg': 'the average of the patch tokens', 'token': 'the class token', 'max': 'the maximum over the patch '
            'tokens', 'avgmax': 'the mean of the average and the maximum over the patch tokens',
            'map': 'attention pooling of the tokens'}.get(pool, f'pooling {pool!r}')
    return what + (' followed by a LayerNorm (`fc_norm`)' if fc_norm else ' after the final LayerNorm (`norm`)')


def usage_lines(name: str, repo_id: str, declared: bool) -> List[str]:
    """The card's loading code: the plugin's short name and torch.hub only for a name macrl_hub declares (its
    own tags); any folder loads by its Hub id or as a local folder in plain timm."""
    arch, tag = name.split('.', 1)
    if declared:
        return ['import macrl_hub  # registers macrl_vit_* (only needed for the short name)',
                f"model = timm.create_model('{name}', pretrained=True).eval()",
                '# or, with plain timm and no plugin:',
                f"# model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()",
                '# or with torch.hub:',
                f"# model = torch.hub.load('macrl-hub/macrl-hub', '{arch}', pretrained=True, tag='{tag}').eval()"]
    return [f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()  # plain timm, no plugin",
            '# or from this folder on disk:',
            f"# model = timm.create_model('local-dir:path/to/{name}', pretrained=True).eval()"]


def usage_block(name: str, repo_id: str, declared: bool, config: Dict[str, Any]) -> List[str]:
    """The card's Python example, runnable as it stands (the alternatives to its first load are comments): load,
    preprocess an image with the model's own data config, features (and logits for a classifier tag)."""
    labels = ', '.join(config['pretrained_cfg'].get('label_names', []))
    return [
        '```python',
        'import timm, torch',
        'from PIL import Image',
        *usage_lines(name, repo_id, declared),
        'cfg = timm.data.resolve_data_config({}, model=model)',
        'transform = timm.data.create_transform(**cfg)',
        f"x = transform(Image.open('image.png').convert('RGB')).unsqueeze(0)  # (1, {_input_shape(config)})",
        'with torch.no_grad():',
        '    features = model.forward_head(model.forward_features(x), pre_logits=True)'
        f'  # (1, {config["num_features"]})',
        *([f'    logits = model(x)  # (1, {config["num_classes"]}): {labels}'] if config['num_classes'] else []),
        '```']


def write_model_card(folder: Path, name: str, config: Dict[str, Any], ck: Dict[str, Any],
                     evals: List[Dict[str, Any]], log: List[Dict[str, Any]], repo_id: Optional[str] = None) -> Path:
    """README.md for the model folder `name` (config.json's `config`, the run's checkpoint `ck`, eval records,
    the run's log). `repo_id`: its Hub repo, for the loading code (default: macrl_hub's own, `hub_repo_id(name)`)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData
    from .models import declared_cfg
    from .pretrained import hub_repo_id
    arch, tag = name.split('.', 1)
    dataset_key = tag.split('_')[0]
    # a Hub dataset id; for a tag of the user's own data, `imagefolder` (the Hub's generic image-folder loader, which
    # transformers' own cards name for local data), never an id made up from the tag
    dataset = _DATASETS.get(dataset_key, 'imagefolder')
    results = []
    for ev in evals:
        for key in METRIC_NAMES:
            if key in ev:
                results.append(EvalResult(
                    task_type='image-classification', dataset_type=dataset, dataset_name=dataset_key.upper(),
                    dataset_split='test', metric_type='accuracy', metric_name=metric_name(key, ev),
                    metric_value=round(ev[key], 2)))
    data = ModelCardData(
        library_name='timm', license=config['pretrained_cfg'].get('license', 'apache-2.0'),
        datasets=[dataset] if dataset_key in _DATASETS else None,  # a Hub dataset id, never one made up from a tag
        tags=['image-classification' if config['num_classes'] else 'image-feature-extraction', 'timm',
              'self-supervised', 'macrl', 'vision-transformer'],
        pipeline_tag='image-classification' if config['num_classes'] else 'image-feature-extraction',
        model_name=name, eval_results=results or None)
    tcfg = ck.get('config', {})
    end = next((r for r in reversed(log) if r.get('event') == 'end'), {})
    sessions = sum(r.get('event') == 'end' for r in log)
    stopped_early = bool(end) and end.get('reason') != 'done'  # before the end of its lr schedule
    steps = [r for r in log if 'img_per_s' in r]
    scheduled = tcfg.get('epochs')
    if tcfg.get('total_steps') and end.get('step') and end.get('epochs'):  # --total-steps / --fit-budget
        scheduled = round(tcfg['total_steps'] * end['epochs'] / end['step'], 2)
    fitted = (f' (fitted to a {tcfg["time_budget"]} time budget by --fit-budget)'
              if tcfg.get('fit_budget') and tcfg.get('time_budget') else '')
    mean_rate = sum(r['img_per_s'] for r in steps) / len(steps) if steps else float('nan')
    from .plot import training_series
    knn = training_series(log)[1]  # {'k=20': [(epoch, top-1), ...], 'k=200': ...}, k ascending
    knn_k, knn_pts = list(knn.items())[-1] if knn else ('', [])
    sizes = next((r for r in log if 'knn_bank' in r), None)  # what the monitor used (runs before 2026-11-29: the
    held = ('held-out images (the test split when the data has one)' if sizes is None else  # flags, upper bounds)
            f'held-out {"test-split" if sizes["knn_held_from"] == "test" else "train-split"} images')
    knn_line = [] if not knn else [
        f'- Online kNN top-1 while training ({knn_k[2:]} neighbours, '
        f'{sizes["knn_bank"] if sizes else tcfg.get("knn_train")} train-split images as the bank, '
        f'{sizes["knn_held"] if sizes else tcfg.get("knn_test")} {held}; a monitor of the online encoder, not the '
        'results above): ' + ', '.join(f'epoch {e:.3g}: {v:.1f}%' for e, v in knn_pts) + '.']
    a = config['model_args']
    declared = declared_cfg(name) is not None  # one of macrl_hub's own tags, not a user's export
    resume_cmd = public_out_arg(f'macrl train --out {tcfg.get("out")}')
    lines = [
        f'# {name}',
        '',
        f'A Vision Transformer ({a["embed_dim"]}-d, {a["depth"]} layers, {a["num_heads"]} heads, patch '
        f'{a["patch_size"]}, {a["img_size"]}x{a["img_size"]} input) pretrained with **MACRL** (Masked Contrastive '
        f'Representation Learning, [arXiv:2211.06012](https://arxiv.org/abs/2211.06012)) on {dataset_key.upper()} '
        + ('by' if declared else 'with') + ' [macrl-hub](https://github.com/macrl-hub/macrl-hub). Features are '
        f'{features_desc(config)}.',
        '' if not config['num_classes'] else
        f'\nThis tag adds a linear classifier ({config["num_classes"]} classes: '
        f'{", ".join(config["pretrained_cfg"].get("label_names", []))}) trained by the linear probe on the frozen '
        f'encoder, so `pretrained=True` classifies out of the box.',
        '',
        *model_details(config, dataset_key),
        '## Usage',
        '',
        *usage_block(name, repo_id or hub_repo_id(name), declared, config),
        '',
        '## Results',
        '',
    ]
    if evals:
        lines += ['| metric | value | data | command |', '|---|---|---|---|']
        for ev in evals:
            for key in METRIC_NAMES:
                if key in ev:
                    used = (f'{ev["n_train"]} train / ' if ev.get('n_train') else '') + f'{ev.get("n_test")} test'
                    capped = (ev.get('knn_k_capped') or {}).get(key[len('knn_top1_k'):])
                    used += ' images' + (f' (k capped at {capped}, the whole bank)' if capped else '')
                    command = public_paths(ev.get('command', ''))
                    lines.append(f'| {metric_name(key, ev)} | {ev[key]:.2f}% | {used} | `{command}` |')
        lines += ['', 'Each number is the JSON line printed by the command in its row (wall times: '
                  + ', '.join(f'{ev["eval"]} {ev.get("wall_time_s", "?")} s' for ev in evals) + ').']
    else:
        lines.append('Not evaluated yet.')
    if evals and not any('finetune_top1' in ev for ev in evals):
        lines += ['', 'Fine-tuning (`macrl eval finetune`) was not run for this card.']
    lines += paper_section(a, dataset_key, evals, end.get('epochs'), tcfg.get('batch_size'))
    lines += [
        '',
        '## Training',
        '',
        f'- Objective `{tcfg.get("objective")}`: mask ratio {tcfg.get("mask_ratio")}, reconstruction '
        f'{tcfg.get("rec_loss")} on {tcfg.get("rec_on")} tokens, alpha {tcfg.get("alpha")}, temperature '
        f'{tcfg.get("temperature")}, memory bank {tcfg.get("bank_size")}, momentum {tcfg.get("momentum")} -> 1.',
        _inputs_line(config.get('pretrained_cfg') or {}),
        f'- {end.get("step", ck.get("step"))} steps = {end.get("epochs", 0):.2f} of {scheduled} scheduled '
        f'epochs{fitted} at batch {tcfg.get("batch_size")}, {ck.get("precision")} precision, '
        f'{ck.get("train_time", 0) / 60:.1f} min wall time, mean {mean_rate:.1f} img/s; stopped: '
        f'{end.get("reason", "?")}' + (' (the learning-rate schedule had not finished)' if stopped_early else '') + '.',
        f'- Run in {sessions} invocation{"s" if sessions > 1 else ""} of `macrl train`'
        + (f', each after the first resumed with `{resume_cmd} --resume auto`.'
           if sessions > 1 else '.'),
        f'- Hardware: {ck.get("hardware") or hardware()} (torch {ck.get("torch")}).',
    ] + ([] if not log else [
        '- Training curve: `training_curve.png` (losses relative to their first value'
        + ('; online kNN top-1 per epoch below them).' if knn_line else ').')]) + knn_line + [
        '',
        'Command:',
        '',
        '```bash',
        train_command(tcfg, end['step'] if stopped_early else None, resumed=sessions > 1),
        '```',
        '',
        '## Citation',
        '',
        '```bibtex',
        CITATION,
        '```',
        '',
    ]
    card = ModelCard(f'---\n{data.to_yaml()}\n---\n\n' + '\n'.join(lines))
    path = Path(folder) / 'README.md'
    card.save(path)
    return path


def paper_section(model_args: Dict[str, Any], dataset_key: str, evals: List[Dict[str, Any]],
                  pretrain_epochs: Optional[float], pretrain_batch: Optional[int] = None) -> List[str]:
    """'## Compared with the paper': the paper's numbers for this dataset (macrl_hub.paper) with their epochs and
    protocol, this card's beside them, and the gap stated; [] for a dataset the paper does not report."""
    from .paper import PAPER_ARCH, PAPER_DATASETS, PAPER_PRETRAIN_EPOCHS, PAPER_PROTOCOL, paper_results, paper_tables
    paper = paper_results(dataset_key)
    if paper is None:
        return []
    from .models import architecture_args
    pa, ours = _arch_desc(architecture_args(PAPER_ARCH[dataset_key])), _arch_desc(model_args)
    lines = ['', '## Compared with the paper', '',
             f'The paper ({paper_tables(dataset_key)}) reports {PAPER_DATASETS[dataset_key]} test top-1 for encoders '
             f'pretrained on `{PAPER_ARCH[dataset_key]}` ({pa}); '
             + ('this card\'s encoder is the same architecture.' if ours == pa else
                f'this card\'s encoder is a different one ({ours}), so the rows compare recipes and budgets, '
                'not the same network.'),
             '',
             '| | pretraining epochs (batch) | linear probe top-1 (probe epochs) | fine-tune top-1 (epochs) |',
             '|---|---|---|---|']
    for method, lin in paper['linear'].items():
        ft, shown = paper['finetune'][method], method.replace('*', '\\*')  # MACRL\* (markdown)
        lines.append(f'| {shown} (paper) | {PAPER_PRETRAIN_EPOCHS:,} (2,048) | {lin.top1:.2f}% ({lin.epochs:,}) | '
                     f'{ft.top1:.2f}% ({ft.epochs:,}) |')
    lin_ev = next((ev for ev in evals if 'linear_top1' in ev), None)
    ft_ev = next((ev for ev in evals if 'finetune_top1' in ev), None)
    ep = (f'{pretrain_epochs:.2f}' if pretrain_epochs else '?') + (f' ({pretrain_batch:,})' if pretrain_batch else '')
    lines.append(f'| MACRL, this card | {ep} | '
                 + (f'{lin_ev["linear_top1"]:.2f}% ({lin_ev.get("probe_epochs", "?")})' if lin_ev else 'not run')
                 + ' | ' + (f'{ft_ev["finetune_top1"]:.2f}% ({ft_ev.get("finetune_epochs", "?")})' if ft_ev
                            else 'not run') + ' |')
    lines += ['', 'MACRL\\* is the paper\'s shorter evaluation of the same MACRL encoder. The paper\'s linear probe: '
              f'{PAPER_PROTOCOL["linear"]}; fine-tune: {PAPER_PROTOCOL["finetune"]}.']
    if lin_ev:
        aug = 'random-resized-crop + flip augmentation' if lin_ev.get('probe_augment') else \
            'no augmentation (features cached once)'
        warm = f'{lin_ev["probe_warmup_epochs"]:g} warmup epochs, ' if lin_ev.get('probe_warmup_epochs') else ''
        lines[-1] += (f' This card\'s linear probe: {lin_ev.get("probe_optimizer", "?")}, '
                      f'lr {lin_ev.get("probe_lr", "?")}, weight decay {lin_ev.get("probe_weight_decay", "?")}, '
                      f'{warm}{aug}, on {lin_ev.get("n_train", "?")} train images.')
    gaps = []
    for ev, key, proto, name in ((lin_ev, 'linear_top1', 'linear', 'linear probe'),
                                 (ft_ev, 'finetune_top1', 'finetune', 'fine-tune')):
        if ev:
            d = ev[key] - paper[proto]['MACRL'].top1
            gaps.append(f'{name} {abs(d):.2f} points {"below" if d < 0 else "above"} the paper\'s MACRL '
                        f'({ev[key]:.2f}% vs {paper[proto]["MACRL"].top1:.2f}%)')
    if gaps:
        share = (f', after {100 * pretrain_epochs / PAPER_PRETRAIN_EPOCHS:.2g}% of its pretraining epochs'
                 if pretrain_epochs else '')
        lines += ['', f'This card: {"; ".join(gaps)}{share}. '
                  + ('A shorter pretraining than the paper\'s: not a reproduction of its number.'
                     if not pretrain_epochs or pretrain_epochs < PAPER_PRETRAIN_EPOCHS else '')]
    return lines


def model_stats(config: Dict[str, Any]) -> Tuple[float, float]:
    """(parameters in millions, GMACs of one forward at the input size, attention's token-token products included)
    of the model config.json describes, counted by torch's FlopCounterMode on the meta device (no weights, no
    compute)."""
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device('meta'):
        model = timm.create_model(config['architecture'], pretrained=False, num_classes=config['num_classes'],
                                  **config['model_args']).eval()
        x = torch.empty(1, *config['pretrained_cfg']['input_size'])
    for block in getattr(model, 'blocks', ()):  # explicit attention: its matmuls counted whichever SDPA kernel
        if hasattr(getattr(block, 'attn', None), 'fused_attn'):
            block.attn.fused_attn = False
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return sum(p.numel() for p in model.parameters()) / 1e6, counter.get_total_flops() / 2e9


def model_details(config: Dict[str, Any], dataset_key: str) -> List[str]:
    """'## Model Details' as timm's own cards have it: type, stats, paper, dataset, origin."""
    from .paper import PAPER_DATASETS
    params, gmacs = model_stats(config)
    size = ' x '.join(str(v) for v in config['pretrained_cfg']['input_size'][1:])
    kind = ('Image classification (a linear probe on the frozen MACRL encoder) / feature backbone'
            if config['num_classes'] else 'Image feature backbone, self-supervised (MACRL)')
    return ['## Model Details', '',
            f'- **Model Type:** {kind}',
            '- **Model Stats:**',
            f'  - Params (M): {params:.1f}',
            f'  - GMACs: {gmacs:.2f} (one image; attention\'s token-token products included)',
            f'  - Image size: {size}',
            '- **Papers:**',
            '  - Masked Contrastive Representation Learning: https://arxiv.org/abs/2211.06012',
            f'- **Dataset:** {PAPER_DATASETS.get(dataset_key, dataset_key.upper())}',
            f'- **Original:** {config["pretrained_cfg"].get("origin_url", "https://github.com/macrl-hub/macrl-hub")}',
            '']


def _input_shape(config: Dict[str, Any]) -> str:
    """'3, 32, 32': one image as config.json's pretrained_cfg says the model takes it."""
    return ', '.join(str(v) for v in config['pretrained_cfg']['input_size'])


def _inputs_line(pcfg: Dict[str, Any]) -> str:
    """'- Inputs: ...' from config.json's pretrained_cfg: what the encoder was trained on and expects."""
    size = 'x'.join(str(v) for v in pcfg.get('input_size', ())[1:]) or '?'
    fmt = lambda v: '(' + ', '.join(f'{x:g}' for x in v) + ')' if v else '?'  # noqa: E731
    return (f'- Inputs: {size} px, normalised with mean {fmt(pcfg.get("mean"))} and std {fmt(pcfg.get("std"))} '
            '(config.json\'s pretrained_cfg, which `timm.data.resolve_data_config` reads).')


def _arch_desc(a: Dict[str, Any]) -> str:
    """'512-d, 12 layers, 4 heads, patch 4' from VisionTransformer keywords."""
    return f'{a["embed_dim"]}-d, {a["depth"]} layers, {a["num_heads"]} heads, patch {a["patch_size"]}'


def hardware() -> str:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    import os
    return f'{cpu}, {os.cpu_count()} cores, no GPU'
