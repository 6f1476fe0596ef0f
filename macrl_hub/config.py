"""The training configuration: one dataclass, overridable from the command line, stored in checkpoints."""
import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

__all__ = ['TrainConfig', 'add_dataclass_args', 'config_from_args', 'parse_duration', 'MACRL_KEYS']

#: TrainConfig fields passed to `MACRL(...)`.
MACRL_KEYS = ('objective', 'mask_ratio', 'decoder_dim', 'decoder_depth', 'decoder_heads', 'rec_loss', 'rec_on',
              'norm_pix_loss', 'proj_hidden_dim', 'proj_dim', 'bank_size', 'temperature', 'alpha',
              'in_batch_negatives', 'freeze_patch_embed', 'views', 'pos_embed')


@dataclass
class TrainConfig:
    recipe: str = field(default='fast', metadata={
        'help': "fast | paper: a named set of defaults (macrl_hub/recipes.py); flags given override it. fast: "
                "these defaults; paper: the paper's CIFAR settings (ViT-512/4, 2,000 epochs, batch 2,048, bank "
                "65,536, loss on visible tokens, ...)"})
    # what to train, on what
    model: str = field(default='macrl_vit_tiny_p4_cifar', metadata={'help': 'timm architecture (any ViT)'})
    model_args: str = field(default='', metadata={'help': 'extra timm.create_model kwargs as JSON, e.g. \'{"depth": 6}\''})
    data: Optional[str] = field(default=None, metadata={'help': 'cifar10 | cifar100 | folder | archive (default $MACRL_DATA)'})
    split: str = 'train'
    num_train: int = field(default=0, metadata={'help': 'use a fixed random subset of this many images (0: all)'})
    out: str = 'runs/macrl'
    # schedule
    epochs: int = 100
    max_steps: int = field(default=0, metadata={'help': 'stop this invocation after this many more optimizer steps '
                                                        '(0: no limit); a resumed run counts from where it resumed'})
    time_budget: str = field(default='', metadata={'help': 'stop cleanly after this long, e.g. 90m, 2h, 3600s'})
    total_steps: int = field(default=0, metadata={
        'help': 'length of the lr/momentum schedule in optimizer steps (0: epochs x steps per epoch); '
                '--fit-budget sets it, and a resumed run keeps it'})
    fit_budget: bool = field(default=False, metadata={
        'help': 'with --time-budget: time a few steps after the first (compiling) ones, in this process, and set '
                '--total-steps to what fits the budget, so the cosine schedule ends when the budget does'})
    batch_size: int = field(default=256, metadata={'help': 'global batch per optimizer step'})
    accum_steps: int = field(default=1, metadata={'help': 'gradient accumulation micro-steps per optimizer step'})
    blr: float = field(default=1.5e-4, metadata={'help': 'base lr; lr = blr * batch_size / 256 (MAE)'})
    lr: Optional[float] = field(default=None, metadata={'help': 'absolute lr (overrides blr)'})
    min_lr: float = 0.0
    warmup_epochs: float = 10.0
    weight_decay: float = 0.01
    beta2: float = 0.95
    clip_grad: float = field(default=0.0, metadata={
        'help': 'clip the gradients to this global L2 norm (0: off); log rows then record grad_norm, the norm '
                'before clipping'})
    momentum: float = field(default=0.99, metadata={'help': 'EMA momentum at step 0, cosine to 1'})
    # MACRL
    objective: str = 'macrl'
    mask_ratio: float = 0.75
    decoder_dim: int = 256
    decoder_depth: int = 1
    decoder_heads: int = 1
    rec_loss: str = 'l1'
    rec_on: str = 'masked'
    norm_pix_loss: bool = False
    proj_hidden_dim: int = 2048
    proj_dim: int = 512
    bank_size: int = 16384
    temperature: float = field(default=0.2, metadata={'help': 'InfoNCE temperature of the contrastive loss'})
    alpha: float = 0.1
    in_batch_negatives: bool = True
    freeze_patch_embed: bool = False
    pos_embed: str = field(default='learned', metadata={
        'help': "the encoder's position embedding: learned (timm's ViT, our default) | sincos (MAE's fixed 2-D "
                "sin-cos, frozen: the paper's encoder is adapted from MAE; --recipe paper)"})
    views: str = field(default='both', metadata={
        'help': "both: each view masked in the main branch and unmasked in the momentum branch (Algorithm 1); "
                "asymmetric: view 1 (strong) masked -> main only, view 2 (weak) unmasked -> momentum only (the "
                "paper's introduction)"})
    drop_path: float = 0.0
    # augmentation
    crop_min: float = 0.2
    solarize_p: float = 0.2
    blur_p: Optional[Tuple[float, float]] = field(default=None, metadata={'help': 'blur prob of view 1, view 2 (default: 0 at 32px, BYOL 1.0 0.1 above)'})
    mean: Optional[Tuple[float, ...]] = field(default=None, metadata={'nargs': '+', 'auto': True,
        'help': "per-channel mean the inputs are normalised with (default: the architecture's timm cfg, CIFAR-10's "
                "for *_cifar); 'auto': the training images' own mean and std, computed before the first step. "
                'Saved with the run as numbers: evaluation and `macrl export` normalise the same way'})
    std: Optional[Tuple[float, ...]] = field(default=None, metadata={'nargs': '+', 'auto': True,
        'help': "per-channel std the inputs are normalised with (default: the architecture's timm cfg; 'auto': "
                "the training images' own, with --mean)"})
    # machinery
    precision: str = field(default='auto', metadata={
        'help': 'auto | bf16 | fp16 | fp32 (auto: bf16 where the hardware has it and it is faster)'})
    compile: Optional[bool] = field(default=None, metadata={
        'help': 'torch.compile the blocks. Not given (auto): on with CUDA for a run of >= 1,000 steps, where it was '
                'measured to pay; off on CPU (see macrl_hub/runtime.py resolve_compile)'})
    momentum_bf16: Optional[bool] = field(default=None, metadata={
        'help': "run the momentum branch's forward on a bf16 cast of its fp32 EMA weights, all-bf16 (the EMA, "
                'checkpoint and state dict stay fp32). Not given (auto): on with --precision bf16 on CPU, where it '
                'was measured faster (see macrl_hub/runtime.py resolve_momentum_dtype)'})
    attention: str = field(default='auto', metadata={
        'help': "attention kernel: auto | fused | explicit (auto: timm's explicit softmax on CPU in bf16, where it is "
                'faster for short sequences; fused elsewhere; see macrl_hub/runtime.py)'})
    keep_freed_memory: bool = field(default=True, metadata={
        'help': 'CPU: keep freed memory in the heap instead of mmap/munmap per step (+50%% img/s on ViT-Ti/4; '
                'see macrl_hub/runtime.py)'})
    threads: int = field(default=0, metadata={'help': 'torch threads per process (0: cores / local processes)'})
    device: str = field(default='auto', metadata={'help': 'torch device, e.g. cpu, cuda:1 (auto: cuda when available)'})
    seed: int = field(default=0, metadata={'help': 'seed of init, data order, augmentation and masking'})
    resume: str = field(default='', metadata={'help': "checkpoint path, or 'auto' for <out>/checkpoint.pth if present"})
    ckpt_every_min: float = 10.0
    ckpt_every_epochs: int = 1
    log_every: int = 10
    knn_every: float = field(default=0, metadata={
        'help': 'online kNN monitor every N epochs, fractions allowed (e.g. 0.25), and at the end of the schedule '
                '(0: off)'})
    knn_train: int = 5000
    knn_test: int = 2000
    final_knn: bool = field(default=False, metadata={
        'help': 'at the end: kNN (k=20, 200) of the encoder on the whole test split, the training images as the '
                'bank, as `macrl eval knn` does; written to <out>/knn.json'})
    tensorboard: bool = False
    on_error: str = field(default='skip', metadata={'help': "unreadable image: 'skip' (counted) or 'raise'"})
    progress: bool = field(default=True, metadata={
        'help': 'progress bars: dataset reading and decoding (stderr), training steps (stdout)'})

    def __post_init__(self) -> None:
        """Refuse values out of range by their flag's name, before any data is read or file written (a zero
        --log-every or --accum-steps would otherwise divide by zero after the first step)."""
        for name, spec in _RANGES.items():
            v = getattr(self, name)
            values = v if isinstance(v, (tuple, list)) else (v,)
            if v is None or any(isinstance(x, str) for x in values):  # unset, or 'auto' (checked where it is used)
                continue
            if not all(_within(x, spec) for x in values):
                raise ValueError(f'--{name.replace("_", "-")} must be {spec}, got {" ".join(map(str, values))}')
        if self.on_error not in ('skip', 'raise'):
            raise ValueError(f"--on-error must be 'skip' or 'raise', got {self.on_error!r}")

    def encoder_kwargs(self) -> Dict[str, Any]:
        import json
        try:
            extra = json.loads(self.model_args) if self.model_args else {}
        except json.JSONDecodeError as e:
            raise ValueError(f'--model-args must be a JSON object, got {self.model_args!r}: {e}') from None
        if not isinstance(extra, dict):
            raise ValueError(f'--model-args must be a JSON object, got {self.model_args!r}')
        return extra

    def macrl_kwargs(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in MACRL_KEYS}


#: field -> the range its values must be in, as the message says it: ">= a", "> a" or an interval "in [a, b)", then
#: optionally what a boundary value means, in brackets
_RANGES = {
    'num_train': '>= 0 (0: every image)',
    'epochs': '>= 1',
    'max_steps': '>= 0 (0: no limit)',
    'total_steps': '>= 0 (0: epochs x steps per epoch)',
    'batch_size': '>= 1',
    'accum_steps': '>= 1',
    'blr': '> 0',
    'lr': '> 0',
    'min_lr': '>= 0',
    'warmup_epochs': '>= 0',
    'weight_decay': '>= 0',
    'beta2': 'in [0, 1)',
    'clip_grad': '>= 0 (0: off)',
    'momentum': 'in [0, 1]',
    'decoder_dim': '>= 1',
    'decoder_depth': '>= 1',
    'decoder_heads': '>= 1',
    'proj_hidden_dim': '>= 1',
    'proj_dim': '>= 1',
    'bank_size': '>= 0 (0: no bank)',
    'temperature': '> 0',
    'alpha': '>= 0',
    'drop_path': 'in [0, 1)',
    'crop_min': 'in (0, 1]',
    'solarize_p': 'in [0, 1]',
    'blur_p': 'in [0, 1] (each of the two probabilities)',
    'threads': '>= 0 (0: cores / local processes)',
    'ckpt_every_min': '>= 0 (0: after every step)',
    'ckpt_every_epochs': '>= 0 (0: only by time and at the end)',
    'log_every': '>= 1',
    'knn_every': '>= 0 (0: off)',
    'knn_train': '>= 1',
    'knn_test': '>= 1',
}


def _within(x: float, spec: str) -> bool:
    """`x` against a _RANGES spec: '>= 1', '> 0', 'in [0, 1)' (anything after the bound, e.g. '(0: off)', is a note)."""
    m = re.match(r'in ([\[(])(\S+), (\S+)([\])])', spec)
    if m:
        lo, hi = float(m[2]), float(m[3])
        return (lo <= x if m[1] == '[' else lo < x) and (x <= hi if m[4] == ']' else x < hi)
    op, bound = spec.split()[:2]
    return x >= float(bound) if op == '>=' else x > float(bound)


def parse_duration(s: str) -> float:
    """'90m' -> 5400.0 seconds; '2h', '45s', '1h30m', '3600' also work; '' -> inf."""
    if not s:
        return float('inf')
    parts = re.fullmatch(r'\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*', str(s))
    if not parts or not any(parts.groups()):
        raise ValueError(f'cannot read duration {s!r}; use e.g. 90m, 2h, 1h30m, 3600s')
    h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + sec


def _str2bool(v: str) -> bool:
    if v.lower() in ('1', 'true', 'yes', 'on'):
        return True
    if v.lower() in ('0', 'false', 'no', 'off'):
        return False
    raise argparse.ArgumentTypeError(f'expected a boolean, got {v!r}')


def _float_or_auto(v: str):
    """A number, or the word 'auto' (`--mean auto`: computed from the data)."""
    if v == 'auto':
        return v
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers or 'auto', got {v!r}") from None


def add_dataclass_args(parser: argparse.ArgumentParser, cls=TrainConfig, suppress_defaults: bool = False) -> None:
    """One `--flag` per field; booleans take `--flag` / `--no-flag`. With suppress_defaults, only the
    flags actually given end up in the parsed namespace (to tell what the user asked for)."""
    for f in dataclasses.fields(cls):
        default = argparse.SUPPRESS if suppress_defaults else f.default
        name = '--' + f.name.replace('_', '-')
        auto = f.type in (Optional[bool], 'Optional[bool]')  # None: the program decides (auto)
        help_ = f.metadata.get('help', '') + f' (default: {"auto" if auto and f.default is None else f.default})'
        if f.type in (bool, 'bool') or auto:
            parser.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif 'Tuple' in str(f.type):  # Tuple[float, float] -> nargs=2; Tuple[float, ...] says its own
            nargs = f.metadata.get('nargs', str(f.type).count('float'))
            typ = _float_or_auto if f.metadata.get('auto') else float
            parser.add_argument(name, dest=f.name, type=typ, nargs=nargs, default=default, help=help_)
        else:
            typ = {'int': int, 'float': float, 'str': str}.get(getattr(f.type, '__name__', str(f.type)), None)
            if typ is None:  # Optional[...]
                typ = float if 'float' in str(f.type) else str
            parser.add_argument(name, dest=f.name, type=typ, default=default, help=help_)


#: options that only the contrastive branch uses / only the reconstruction branch uses
CONTRASTIVE_ONLY = ('bank_size', 'temperature', 'proj_dim', 'proj_hidden_dim', 'in_batch_negatives', 'momentum',
                    'freeze_patch_embed')
MIM_ONLY = ('mask_ratio', 'decoder_dim', 'decoder_depth', 'decoder_heads', 'rec_loss', 'rec_on', 'norm_pix_loss')


def check_flags(objective: str, given) -> None:
    """Refuse options the chosen objective would silently ignore (e.g. --objective mae --bank-size 4096)."""
    unused = {'mae': CONTRASTIVE_ONLY + ('alpha',), 'moco': MIM_ONLY + ('alpha',)}.get(objective, ())
    bad = sorted(set(given) & set(unused))
    if bad:
        flags = ', '.join('--' + b.replace('_', '-') for b in bad)
        raise ValueError(f'--objective {objective} does not use {flags}; drop them, or use --objective macrl')


def config_from_args(args: argparse.Namespace, cls=TrainConfig):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
