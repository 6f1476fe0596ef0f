"""MACRL pretraining: `macrl train` (also `python -m macrl_hub.train`).

One process (CPU or one GPU):
    macrl train --model macrl_vit_tiny_p4_cifar --data cifar10 \\
        --epochs 100 --batch-size 256 --out runs/tiny
    macrl train ... --time-budget 90m            # stop cleanly with a checkpoint after 90 minutes
    macrl train ... --epochs 1000 --time-budget 5m --fit-budget --final-knn   # schedule sized to the budget
    macrl train --out runs/tiny --resume auto     # continue <out>/checkpoint.pth exactly, with its own settings
    Ctrl-C (SIGINT) or SIGTERM: the step in flight finishes, a checkpoint is written, exit 130 / 143 (train() raises
    TrainingInterrupted); a second signal stops at once (the last checkpoint stays whole). `--resume auto` continues.
    macrl train --recipe paper --data ... --out runs/paper   # the paper's settings (macrl_hub/recipes.py)
    macrl train --data path/to/images --mean 0.5 0.5 0.5 --std 0.25 0.25 0.25 ...   # your data's statistics
    macrl train --data path/to/images --mean auto ...   # computed from the training images (recorded as numbers)
Several processes (gloo on CPU, nccl on GPU; --batch-size stays the global batch):
    torchrun --nproc_per_node=2 -m macrl_hub.train --data ... --out runs/ddp
    torchrun --nnodes=2 --node_rank=$R --master_addr=$HOST --nproc_per_node=8 -m macrl_hub.train ...

Writes <out>/checkpoint.pth (atomic, `torch.load(weights_only=True)`), <out>/log.jsonl (every loss key,
lr, momentum, img/s; `read_log` reads it back), <out>/config.json; holds an exclusive flock on <out> while it runs
(a second `macrl train` there is refused). Every option of the MACRL wrapper is a flag: `macrl train -h`.
"""
import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .card import hardware
from .config import TrainConfig, add_dataclass_args, check_flags, config_from_args, parse_duration
from .data import channel_stats, class_difference, default_data, load_dataset
from .distributed import check_same_on_all_ranks, from_rank0, is_dist, rank, world_size
from .macrl import MACRL
from .models import CIFAR10_MEAN, NORMALIZATION, set_data_config
from .momentum import cosine_momentum
from .precision import autocast, resolve_precision  # noqa: F401  (re-exported: older imports)
from .recipes import apply_recipe
from .runtime import (choose_attention, compile_blocks, eager, keep_freed_memory, resolve_compile,
                      resolve_momentum_chunk, resolve_momentum_dtype)
from .transforms import PairAugment
from .weights import atomic_open, atomic_torch_save, load_checkpoint

__all__ = ['train', 'build_macrl', 'lr_at', 'resolve_precision', 'autocast', 'main', 'TrainingDiverged',
           'TrainingInterrupted',
           'resumed_config', 'RUN_CONTROL']

CKPT_NAME = 'checkpoint.pth'
FIT_SKIP, FIT_STEPS = 3, 20  # --fit-budget: steps left out (compilation, warm-up), then steps timed


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM stopped training after a step, with a checkpoint of that step written (`result`: what
    train() would have returned). `macrl train` exits with 128 + `signum`, as the shell reports a signalled command;
    a caller of train() (a notebook, a benchmark looping over runs) stops as it would on Ctrl-C, never mistaking the
    run for a finished one."""

    def __init__(self, signum: int, result: Dict[str, Any]) -> None:
        super().__init__(f'{signal.Signals(signum).name} at step {result.get("step")}; checkpoint '
                         f'{result.get("checkpoint")}')
        self.signum, self.result = signum, result


class _StopOnSignal:
    """While training: SIGINT / SIGTERM ask the loop to stop after the step in flight, with a checkpoint (a kill
    between checkpoints would lose up to --ckpt-every-min of work). The first signal puts the previous handlers
    back, so a second one acts at once. Outside the main thread (no handlers can be set there) it does nothing."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._old: Dict[int, Any] = {}

    def __enter__(self) -> '_StopOnSignal':
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                old = signal.getsignal(s)
                if old in (signal.SIG_IGN, None):  # ignored on purpose (a `nohup`/`&` job), or a C handler's
                    continue
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self._restore()
        os.write(2, f'\nmacrl train: {signal.Signals(signum).name}: stopping after this step with a checkpoint '
                    '(send it again to stop at once)\n'.encode())  # not print: the signal may land inside one

    def _restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    def __exit__(self, *exc: Any) -> None:
        self._restore()


# -- setup helpers ---------------------------------------------------------------------------------
def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float = 0.0) -> float:
    """Linear warmup, then half-cosine decay to min_lr (MAE's util/lr_sched.py, per step)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_macrl(cfg: TrainConfig) -> MACRL:
    import timm
    from timm.models import split_model_name_tag
    from . import models  # noqa: F401  (registers macrl_vit_*)
    extra = cfg.encoder_kwargs()
    arch, tag = split_model_name_tag(cfg.model)
    if tag or ':' in cfg.model or extra.get('pretrained') or 'pretrained_cfg' in extra:
        raise ValueError(f'--model {cfg.model}'
                         + (f' --model-args {cfg.model_args}' if 'pretrained' in cfg.model_args else '')
                         + f' asks for pretrained weights; macrl train pretrains from a random init: give the bare '
                         f'architecture, e.g. --model {arch.split(":")[-1].split("/")[-1]}')
    extra.pop('pretrained', None)  # pretrained: false, harmless
    if 'num_classes' in extra:
        raise ValueError('--model-args sets num_classes: the pretrained encoder has no head (num_classes=0); '
                         'drop it from --model-args')
    if cfg.drop_path and extra.get('drop_path_rate', cfg.drop_path) != cfg.drop_path:
        raise ValueError(f'--drop-path {cfg.drop_path} and --model-args drop_path_rate '
                         f'{extra["drop_path_rate"]} disagree; give one of them')
    extra = {'drop_path_rate': cfg.drop_path, **extra}  # --model-args '{"drop_path_rate": ...}' works as well
    try:
        encoder = timm.create_model(cfg.model, pretrained=False, num_classes=0, **extra)
    except RuntimeError as e:
        if 'Unknown model' in str(e):
            raise ValueError(f'unknown model {cfg.model!r}; e.g. {timm.list_models("macrl_*")}') from None
        raise
    # what training normalises with, saved with every checkpoint (--mean auto: set once the data is read, in _train)
    auto = stats_from_data(cfg)
    models.set_data_config(encoder, None if auto else cfg.mean, None if auto else cfg.std)
    return MACRL(encoder, **cfg.macrl_kwargs())


def images_fit_on_gpu(images: torch.Tensor, device: torch.device, share: float = 0.25) -> bool:
    """Whether a split's uint8 tensor should live on the GPU: CIFAR-10's 150 MB does (batches are gathered and
    augmented there, no copy per step); a set larger than `share` of the GPU's free memory stays in host memory,
    which leaves the model, optimizer and activations their room."""
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= share * free


def stats_from_data(cfg: TrainConfig) -> bool:
    """True for `--mean auto` / `--std auto` (either or both: the two are computed together); ValueError for 'auto'
    mixed with numbers."""
    auto = {k: v for k in NORMALIZATION if _names_auto(v := getattr(cfg, k))}
    for k, v in auto.items():
        if list(_as_list(v)) != ['auto']:
            raise ValueError(f"--{k} auto takes no numbers (got {' '.join(map(str, _as_list(v)))}): give either "
                             f"'auto' or one number per channel")
    other = [k for k in NORMALIZATION if k not in auto and getattr(cfg, k) is not None]
    if auto and other:
        raise ValueError(f'--{next(iter(auto))} auto computes mean and std from the data; --{other[0]} '
                         f'{" ".join(map(str, _as_list(getattr(cfg, other[0]))))} contradicts it: give both as '
                         f'numbers, or --{other[0]} auto')
    return bool(auto)


def _as_list(v) -> list:
    return [v] if isinstance(v, str) else list(v)


def _names_auto(v) -> bool:
    """Whether a --mean/--std value (None, numbers, 'auto' or ['auto', ...]) asks for 'auto'."""
    return v is not None and 'auto' in _as_list(v)


def step_flops(cfg: TrainConfig, batch: int = 4) -> float:
    """FLOPs per image of one training step of `cfg`'s model and objective (both views: masked encoder forward and
    backward, decoder, momentum forward, bank logits), counted by torch's FlopCounterMode on CPU; the optimizer and
    the augmentation are not counted."""
    from torch.utils.flop_counter import FlopCounterMode
    m = build_macrl(cfg)
    if m.bank is not None and m.bank.size:  # a full bank, as after the first steps: its logits count
        m.bank.enqueue(F.normalize(torch.randn(m.bank.size, m.bank.bank.shape[1]), dim=1))
    x1, x2 = torch.randn(2, batch, 3, *m.img_size).unbind(0)
    with FlopCounterMode(display=False) as fc:
        m(x1, x2)['loss'].backward()
    return fc.get_total_flops() / batch


def _param_groups(model: MACRL, weight_decay: float):
    """No weight decay on norms, biases and `MACRL.no_weight_decay()` (positional embeddings, class/register
    tokens, the mask token): timm's rule, so its create_optimizer_v2 on the wrapper decays the same parameters.
    Always two groups (a checkpoint's optimizer state is laid out by them), even at weight decay 0."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip or name.endswith('.bias') else decay).append(p)
    return [{'params': no_decay, 'weight_decay': 0.0}, {'params': decay, 'weight_decay': weight_decay}]


def _step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """Randomness of a step is a function of (seed, step) alone: resume needs no RNG state to be exact."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) % (2 ** 63))
    return g


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def read_log(path: os.PathLike) -> List[Dict[str, Any]]:
    """The rows of a `macrl train` log.jsonl that describe the run its checkpoint holds.

    An invocation killed between two checkpoints leaves rows past its last checkpoint, and the invocation that
    resumes from that checkpoint trains and logs those steps again. Training rows (those with `img_per_s`) rise in
    step within one invocation, so a training row whose step does not exceed the previous one starts a resumed
    invocation: the earlier rows at or past its step are dropped. A line cut short by a kill is skipped.
    """
    rows: List[Dict[str, Any]] = []
    last = -1
    for line in Path(path).read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(r, dict):
            continue
        if 'img_per_s' in r:
            if r['step'] <= last:
                rows = [x for x in rows if x.get('step', -1) < r['step']]
            last = r['step']
        rows.append(r)
    return rows


def _rewind_log(path: Path, step: int) -> None:
    """Before a resumed invocation appends: keep only the rows up to the checkpoint's `step` (atomic rewrite)."""
    if not path.is_file():
        return
    rows = [r for r in read_log(path) if r.get('step', -1) <= step]
    with atomic_open(path, 'w') as f:  # fsync + rename, as for checkpoints: a power cut keeps one whole log
        f.write(''.join(json.dumps(r) + '\n' for r in rows))


def _check_out_dir(out: Path, need_bytes: int, locks: contextlib.ExitStack) -> None:
    """Fail before training, not after an hour, if checkpoints cannot be written or another `macrl train` is
    writing to `out`. The folder stays locked (an exclusive `flock` on it) until `locks` closes."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f'.write-test-{os.getpid()}'
        probe.write_bytes(b'ok')
        probe.unlink()
    except OSError as e:
        raise OSError(f'--out {out} is not writable: {e.strerror or e}') from None
    _lock_folder(out, locks)
    for stale in out.glob(f'.{CKPT_NAME}.*.tmp'):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    free = shutil.disk_usage(out).free
    if free < 2 * need_bytes:
        raise OSError(f'--out {out} has {free / 2**20:.0f} MiB free; checkpoints need about '
                      f'{2 * need_bytes / 2**20:.0f} MiB (current + temporary copy)')


def _lock_folder(out: Path, locks: contextlib.ExitStack) -> None:
    """Two runs in one --out (a scheduler's requeued job while the first copy still runs) would replace each
    other's log and checkpoint, and each deletes temporary files the other may be writing: the second is refused."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    fd = os.open(out, os.O_RDONLY)
    locks.callback(os.close, fd)  # closing the descriptor releases the lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BlockingIOError(f'--out {out} is in use by another macrl train (it holds the folder\'s lock); wait '
                              f'for it to end, or choose another --out') from None
    except OSError:  # a file system without flock (some network mounts): run unlocked
        pass


def _write_config(out: Path, cfg: TrainConfig) -> None:
    with atomic_open(out / 'config.json', 'w') as f:  # a resume that finds no checkpoint reads it
        f.write(json.dumps(dataclasses.asdict(cfg), indent=2))


def _init_process_group(cfg: TrainConfig) -> bool:
    """Under torchrun (RANK/WORLD_SIZE set) with no process group yet, create one; True when this call created it."""
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ or is_dist():
        return False
    use_cuda = torch.cuda.is_available() and cfg.device != 'cpu'
    dist.init_process_group('nccl' if use_cuda else 'gloo')
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    return True


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == 'auto':
        if torch.cuda.is_available():
            return torch.device('cuda', torch.cuda.current_device())
        return torch.device('cpu')
    return torch.device(cfg.device)


# -- the loop --------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Pretrain `cfg.model` with MACRL; returns a summary dict. See the module docstring.

    Under torchrun (RANK/WORLD_SIZE set, no process group yet) it creates the process group and destroys it when it
    returns or fails: a gloo group left to the interpreter's exit can abort the process after training has finished
    ("terminate called without an active exception", SIGABRT, seen once in CI). A group the caller made is left
    alone."""
    t_start = time.time()  # the run's clock (time budget, train_time) includes joining the group
    owns_group = _init_process_group(cfg)
    out, existed = Path(cfg.out), Path(cfg.out).exists()
    try:
        with contextlib.ExitStack() as locks:
            return _train(cfg, t_start, locks)
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):  # a failed start (e.g. bad --data) leaves no
            out.rmdir()  # empty folder behind; anything written in it (a run that began) stays
        raise
    finally:
        if owns_group and is_dist():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, t_start: float, locks: contextlib.ExitStack) -> Dict[str, Any]:
    budget = parse_duration(cfg.time_budget)
    resume = str(_resume_path(cfg) or '') if cfg.resume else ''  # the checkpoint to continue; '' for a new run
    auto_stats = stats_from_data(cfg)  # --mean/--std auto: the data's own, computed once it is read
    # one of --mean/--std alone would pair with the architecture's other (a resumed run compares them with its record)
    if not resume and not auto_stats and (cfg.mean is None) != (cfg.std is None):
        raise ValueError(f'--{"mean" if cfg.mean is not None else "std"} was given without '
                         f'--{"std" if cfg.mean is not None else "mean"}: give both, your data\'s statistics')
    device = _device(cfg)
    master = rank() == 0
    digest = int(hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode())
                 .hexdigest()[:12], 16)  # each rank resolved its own flags, recipe and resumed settings
    check_same_on_all_ranks(digest == from_rank0(digest, device), device,
                            'the ranks run with different settings than rank 0 (with --resume auto each rank reads '
                            'the run\'s settings from --out itself: it must be a folder all nodes share)')
    ws = world_size()
    local_ws = int(os.environ.get('LOCAL_WORLD_SIZE', 1))
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // local_ws))
    precision = resolve_precision(cfg.precision, device)
    if device.type == 'cpu' and cfg.keep_freed_memory:
        keep_freed_memory()
    if cfg.batch_size % (ws * cfg.accum_steps):
        raise ValueError(f'--batch-size {cfg.batch_size} must be divisible by world size x accum steps '
                         f'= {ws} x {cfg.accum_steps}')
    micro = cfg.batch_size // (ws * cfg.accum_steps)  # per rank, per micro-step
    views = 2 if cfg.views == 'both' else 1  # asymmetric: only k2 is enqueued
    keys_per_enqueue = views * micro * ws  # the keys of every rank, per micro-step
    if cfg.objective != 'mae' and 0 < cfg.bank_size < keys_per_enqueue:
        raise ValueError(f'--bank-size {cfg.bank_size} is smaller than the {keys_per_enqueue} keys enqueued per '
                         f'micro-step ({views} view{"s" if views > 1 else ""} x {micro} x {ws} ranks); use 0 (no '
                         f'bank) or >= {keys_per_enqueue}')

    if cfg.fit_budget and not cfg.total_steps and not math.isfinite(budget):
        raise ValueError('--fit-budget sizes the schedule to --time-budget; give one, e.g. --time-budget 5m')
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if device.type == 'cuda':
        torch.set_float32_matmul_precision('high')  # TF32 for what runs outside autocast (losses, kNN)
    model = build_macrl(cfg).to(device)
    if model.in_chans != 3 or model.img_size[0] != model.img_size[1]:  # before any data is read or file written
        raise ValueError(f'macrl train feeds square RGB images (every image is read as RGB and centre-cropped); '
                         f'{cfg.model} with --model-args {cfg.model_args or "{}"} takes {model.in_chans} channels at '
                         f'{model.img_size[0]}x{model.img_size[1]}: use in_chans 3 and one img_size')
    attention = choose_attention(model, device, precision, cfg.attention)  # a bad --attention fails here, early
    if model.momentum_encoder is not None:
        model.momentum_dtype = resolve_momentum_dtype(cfg.momentum_bf16, device, precision)
    out = Path(cfg.out)
    n_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    taken = master and not cfg.resume and (out / CKPT_NAME).is_file()
    if _any_rank(taken, device):  # never overwrite a user's run by starting a new one in its folder
        raise FileExistsError(f'--out {out} already holds {CKPT_NAME} from an earlier run; pass --resume auto to '
                              f'continue it, or choose another --out (delete the folder yourself to start over)')
    if _any_rank(master and _is_model_folder(out), device):  # nor an exported model's config.json
        raise FileExistsError(f'--out {out} holds a model folder (model.safetensors, a timm config.json); a run '
                              f'would replace its config.json: choose another --out')
    if master:
        _check_out_dir(out, 3 * n_bytes, locks)  # model + 2 Adam moments
    elsewhere = bool(resume) and Path(resume).resolve() != (out / CKPT_NAME).resolve()
    if _any_rank(master and elsewhere and ((out / CKPT_NAME).is_file() or (out / 'log.jsonl').is_file()), device):
        raise FileExistsError(f'--resume {resume} continues that run in --out {out}, which holds another run '
                              f'({CKPT_NAME} or log.jsonl): its files would be replaced and its log mixed with this '
                              f"one's; choose an empty --out, or --resume auto to continue the run that is there")

    data = load_dataset(cfg.data or default_data(), cfg.split, size=model.img_size[0], on_error=cfg.on_error,
                        progress=cfg.progress and master)
    if cfg.num_train:
        data = data.subset(cfg.num_train, seed=cfg.seed)
    if auto_stats:  # the same numbers on every rank (each reads the whole set); recorded as numbers from here on
        mean, std = channel_stats(data.images)
        if min(std) <= 0:
            raise ValueError(f'--mean/--std auto: {data.source} has no variation in channel {std.index(min(std))} '
                             f'(std 0: every training pixel has the same value there); give --mean/--std as numbers')
        set_data_config(model.encoder, mean, std)
        cfg = dataclasses.replace(cfg, mean=mean, std=std)
    if device.type == 'cuda' and images_fit_on_gpu(data.images, device):  # batches and augmentation stay there
        data.images = data.images.to(device)
    elif device.type == 'cuda' and master:  # each step's batch is gathered in host memory and copied over
        print(f'macrl train: the {data.images.numel() / 2 ** 30:.1f} GiB of training images stay in host memory '
              f'(more than a quarter of the GPU\'s free memory); each batch is copied to the GPU', flush=True)
    n = len(data)
    test_data, problem = None, ''
    if master and (cfg.knn_every or cfg.final_knn):
        try:
            test_data = _test_split(cfg, model.img_size[0], data)
        except ValueError as e:
            problem = str(e)
    if _any_rank(bool(problem), device):  # every rank stops, not rank 0 alone
        raise ValueError(problem or 'rank 0 refused the run: see its error')
    epochs_held = cfg.bank_size / (views * n)  # a full bank's keys, in epochs of this data (`views` keys per image)
    if master and cfg.objective != 'mae' and epochs_held >= 1 and not resume:  # every image meets its own keys
        half = max(keys_per_enqueue, views * n // 2 // keys_per_enqueue * keys_per_enqueue)
        print(f'macrl train: note: --bank-size {cfg.bank_size} holds {epochs_held:.1f} epochs of keys of these {n} '
              f'images, so each image meets ~{views * (epochs_held - 0.5):.0f} of its own earlier keys among its '
              f"negatives (the paper's 65,536 on CIFAR-10 holds 0.66 epochs: ~21% of images meet one); half an "
              f'epoch, --bank-size {half}, avoids most of that', flush=True)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f'--batch-size {cfg.batch_size} is larger than the dataset ({n} images)')
    total_steps = cfg.total_steps or cfg.epochs * steps_per_epoch
    fit = cfg.fit_budget and not cfg.total_steps  # a resumed run keeps the length it was fitted to
    lr = cfg.lr if cfg.lr is not None else cfg.blr * cfg.batch_size / 256
    enc_cfg = model.encoder.pretrained_cfg
    aug = PairAugment(model.img_size[0], enc_cfg.get('mean'), enc_cfg.get('std'), crop_scale=(cfg.crop_min, 1.0),
                      blur_p=cfg.blur_p, solarize_p=cfg.solarize_p)

    params = _param_groups(model, cfg.weight_decay)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, cfg.beta2), fused=device.type in ('cuda', 'cpu'))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == 'fp16')
    step, seen_time = 0, 0.0
    ckpt_path = out / CKPT_NAME
    check_same_on_all_ranks(bool(resume), device, f'--resume: not every rank sees {ckpt_path}; only rank 0 writes '
                            'checkpoints, so --out must be a folder all nodes share')
    if resume:
        ck = load_checkpoint(resume)
        fitted = ck.get('config', {}).get('total_steps', 0)
        if fit and fitted:  # the run was fitted to its first budget: keep that schedule, never refit
            cfg = dataclasses.replace(cfg, total_steps=fitted)
            total_steps, fit = fitted, False
        elif fit and int(ck.get('step', 0)) and not ck.get('config', {}).get('fit_budget'):
            raise ValueError(f'--fit-budget: the run in {resume} was not fitted to a time budget (its schedule, '
                             f'{total_steps} steps, under way at step {ck["step"]}); refitting would jump its '
                             f'learning rate: drop --fit-budget (--time-budget alone stops it cleanly)')
        _check_resume_compatible(ck, cfg)
        _check_same_data(ck, data, resume, steps_per_epoch)
        _check_same_normalization(ck, cfg, model.encoder.pretrained_cfg, resume)
        model.load_state_dict(ck['model'])
        opt.load_state_dict(ck['optimizer'])
        if ck.get('scaler'):  # {} from a disabled scaler (a bf16/fp32 run): a run resumed in fp16 starts a fresh one
            scaler.load_state_dict(ck['scaler'])
        step, seen_time = int(ck['step']), float(ck.get('train_time', 0.0))
    warmup_steps = min(int(cfg.warmup_epochs * steps_per_epoch), total_steps // 2)  # short runs: half at most
    ddp_model = model
    if ws > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None, broadcast_buffers=False)
    fwd_model = ddp_model
    step_limit = step + cfg.max_steps if cfg.max_steps else float('inf')
    max_steps = int(min(total_steps, step_limit))
    compiled = resolve_compile(cfg.compile, device, max_steps - step)  # the steps this invocation plans to run
    if compiled:
        compile_blocks(model)
    elif model.momentum_encoder is not None:  # chunks of another size would be new graphs to compile
        model.momentum_chunk = resolve_momentum_chunk(model, device, precision)

    if master:
        _write_config(out, cfg)
        print(f'macrl train: {cfg.model} objective={cfg.objective} on {data.source} ({n} images, {len(data.classes)} '
              f'classes, {data.skipped} skipped) | device={device} precision={precision} attention={attention} '
              f'world={ws} threads={torch.get_num_threads()} compile={"on" if compiled else "off"}'
              + (' (auto)' if cfg.compile is None else '')
              + (f' momentum-branch={str(model.momentum_dtype).replace("torch.", "")}' if model.momentum_dtype else '')
              + (f' momentum-chunk={model.momentum_chunk}' if model.momentum_chunk else ''))
        mean, std = (tuple(round(v, 4) for v in enc_cfg[k]) for k in ('mean', 'std'))
        note = ''
        if cfg.mean is None and mean == tuple(round(v, 4) for v in CIFAR10_MEAN) and \
                not re.match(r'cifar10(?!\d)', Path(str(data.source)).name.lower()):
            own_mean, own_std = channel_stats(data.images)
            note = (f" (CIFAR-10's, the architecture's; this data's own, for a new run: --mean auto, i.e. --mean "
                    f"{' '.join(map(str, own_mean))} --std {' '.join(map(str, own_std))})")
        elif auto_stats:
            note = " (this data's own: --mean auto)"
        print(f'  input {model.img_size[0]}x{model.img_size[1]} (images of other sizes: shorter side resized, centre '
              f'crop), normalised with mean {mean} std {std}{note}')
        print(f'  batch {cfg.batch_size} (= {ws} ranks x {cfg.accum_steps} accum x {micro}), lr {lr:.3g} '
              f'(blr {cfg.blr:g} x {cfg.batch_size}/256), {steps_per_epoch} steps/epoch, {total_steps} steps total, '
              f'warmup {warmup_steps}' + (f', resuming at step {step}' if step else ''))
    if master and step:  # rows a killed invocation wrote after its last checkpoint
        _rewind_log(out / 'log.jsonl', step)
    elif master and (out / 'log.jsonl').is_file():  # a new run in a folder whose run left no checkpoint: its
        kept = out / f'log-before-{time.strftime("%Y%m%d-%H%M%S")}.jsonl'  # log is kept aside, not appended to
        while kept.exists():
            kept = kept.with_name(kept.stem + '-1.jsonl')
        os.replace(out / 'log.jsonl', kept)
        print(f'  the log of the run that was in {out} is now {kept.name}', flush=True)
    log_f = open(out / 'log.jsonl', 'a') if master else None
    tb = _tensorboard(out) if master and cfg.tensorboard else None
    knn_sets = _knn_sets(cfg, data, test_data) if cfg.knn_every and master and len(data.classes) > 1 else None
    if cfg.knn_every and master and knn_sets is None:  # unlabelled images in one folder: any kNN scores 100%
        print(f'macrl train: --knn-every: {data.source} has one class ({data.classes[0]}); the kNN monitor needs '
              'labels (2 classes or more) and is skipped', flush=True)

    knn_interval = max(1, round(cfg.knn_every * steps_per_epoch))  # optimizer steps between kNN monitors
    # time spent in kNN monitors since the run began (`time` and train_time include it): a resumed run continues
    # from the log, rewound to its checkpoint above, so `time - monitor_s` is training time across invocations
    monitor_s = max((r['monitor_s'] for r in read_log(out / 'log.jsonl') if 'monitor_s' in r), default=0.0) \
        if master and step else 0.0
    first_step = step
    t_fit = first_step_s = None
    last_ckpt = time.time()
    pbar = None
    if master and cfg.progress:
        from tqdm import tqdm
        pbar = tqdm(total=max_steps, initial=step, unit='step', dynamic_ncols=True, file=sys.stdout)
    stop_reason = 'done'
    t_seg, imgs_seg = time.time(), 0
    last: Dict[str, float] = {}
    perm, perm_epoch = None, -1
    drop_path = any(getattr(m, 'drop_prob', 0.0) > 0 for m in model.modules())  # timm's DropPath
    model.train()
    with _StopOnSignal() as stopper:
        while step < max_steps:
            epoch, pos = divmod(step, steps_per_epoch)
            if perm_epoch != epoch:
                perm, perm_epoch = epoch_permutation(n, cfg.seed, epoch), epoch
            idx = perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size].to(data.images.device)
            g = _step_generator(cfg.seed, step, device)
            if drop_path:  # stochastic depth draws from the global RNG: seeded per (seed, step, rank), resume stays exact
                torch.manual_seed(((cfg.seed * 1_000_003 + step) * 1009 + rank()) % (2 ** 63))
            batch = data.images[idx].to(device, non_blocking=True)
            x1, x2 = aug(batch, g)  # global batch, same on every rank; each takes its slice
            noise = torch.rand(2, cfg.batch_size, model.num_patches, device=device, generator=g)  # masks, global
            noise = noise if model.views == 'both' else noise[:1]  # views='asymmetric': only x1 is masked
            cur_lr = lr_at(step, total_steps, warmup_steps, lr, cfg.min_lr)
            for group in opt.param_groups:
                group['lr'] = cur_lr
            m = cosine_momentum(step, total_steps, cfg.momentum)
            sums: Dict[str, float] = {}
            for a in range(cfg.accum_steps):
                lo = (a * ws + rank()) * micro
                sync = a == cfg.accum_steps - 1
                ctx = ddp_model.no_sync() if (ws > 1 and not sync) else contextlib.nullcontext()
                with ctx:
                    with autocast(device, precision):
                        losses = fwd_model(x1[lo:lo + micro], x2[lo:lo + micro],
                                           mask_noise=noise[:, lo:lo + micro].reshape(len(noise) * micro, -1))
                    scaler.scale(losses['loss'] / cfg.accum_steps).backward()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + _global_mean(v.detach()) / cfg.accum_steps
            if not math.isfinite(sums['loss']):
                stop_reason = 'diverged'
                break
            if cfg.clip_grad:
                scaler.unscale_(opt)  # logged: the norm before clipping
                sums['grad_norm'] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad))
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            model.update_momentum(m)
            step += 1
            imgs_seg += cfg.batch_size
            last = sums
            if first_step_s is None:
                _sync(device)
                first_step_s = time.time() - t_start
                if master:
                    print(f'  first step done {first_step_s:.1f} s after start (data, model' +
                          (', compilation)' if compiled else ')'), flush=True)
            if fit and step == first_step + FIT_SKIP:
                _sync(device)
                t_fit = time.time()
            elif fit and step == first_step + FIT_SKIP + FIT_STEPS:
                _sync(device)
                rate = FIT_STEPS / (time.time() - t_fit)  # optimizer steps per second
                left = budget - (time.time() - t_start)
                # 3% kept for checkpoints and kNN monitor passes; never past --epochs
                fitted = min(step + max(1, int(0.97 * rate * left)), cfg.epochs * steps_per_epoch)
                fitted = from_rank0(fitted, device)  # one schedule for all ranks (each timed its own steps)
                total_steps, fit = fitted, False
                warmup_steps = min(warmup_steps, total_steps // 2)
                max_steps = int(min(total_steps, step_limit))
                cfg = dataclasses.replace(cfg, total_steps=total_steps)  # saved with the run: resume keeps it
                if master:
                    _write_config(out, cfg)
                    rec = dict(event='fit_budget', step=step, steps_per_s=rate, total_steps=total_steps,  # no img_per_s:
                               epochs=total_steps / steps_per_epoch, warmup_steps=warmup_steps)  # not a training row
                    log_f.write(json.dumps(rec) + '\n')
                    log_f.flush()
                    print(f'  --fit-budget: {rate * cfg.batch_size:.0f} img/s -> schedule of {total_steps} steps '
                          f'({total_steps / steps_per_epoch:.1f} epochs, warmup {warmup_steps}) for the '
                          f'{left:.0f} s left', flush=True)
            elapsed = time.time() - t_start
            if master and (step % cfg.log_every == 0 or step == max_steps):
                dt = time.time() - t_seg
                rec = dict(step=step, epoch=step / steps_per_epoch, lr=cur_lr, momentum=m,
                           img_per_s=imgs_seg / dt, time=seen_time + elapsed, **sums)
                log_f.write(json.dumps(rec) + '\n')
                log_f.flush()
                if tb:
                    for k, v in rec.items():
                        tb.add_scalar(k, v, step)
                if pbar:
                    pbar.set_postfix(loss=f"{sums['loss']:.3f}", img_s=f'{imgs_seg / dt:.0f}', lr=f'{cur_lr:.2e}')
                t_seg, imgs_seg = time.time(), 0
            if pbar:
                pbar.update(1)
            epoch_end = step % steps_per_epoch == 0
            if knn_sets and (step % knn_interval == 0 or step == total_steps):
                t_mon = time.time()
                with eager():
                    acc = _online_knn(model, knn_sets, device, precision)
                monitor_s += time.time() - t_mon
                rec = dict(step=step, epoch=step / steps_per_epoch, time=seen_time + time.time() - t_start,
                           monitor_s=monitor_s, knn_bank=len(knn_sets[0]), knn_held=len(knn_sets[1]),
                           knn_held_from='test' if test_data is not None else 'train',
                           **{f'knn_top1_k{k}': v for k, v in acc.items()})
                log_f.write(json.dumps(rec) + '\n')
                log_f.flush()
                print(f'\n  epoch {step / steps_per_epoch:g}: kNN {acc}', flush=True)
                model.train()
            over, signum = _rank_max([elapsed >= budget, stopper.signum or 0], device)  # one decision for all
            if over or signum:  # every rank stops at the same step, and knows the signal one of them got
                stop_reason, stopper.signum = ('interrupted', int(signum)) if signum else ('time_budget', None)
                break
            due = (time.time() - last_ckpt) / 60 >= cfg.ckpt_every_min or \
                (epoch_end and cfg.ckpt_every_epochs and (step // steps_per_epoch) % cfg.ckpt_every_epochs == 0)
            if due and master:
                _save(ckpt_path, model, opt, scaler, cfg, step, seen_time + time.time() - t_start, precision,
                      data_record(data))
                last_ckpt = time.time()
    if pbar:
        pbar.close()
    if fit and master and step < total_steps and stop_reason in ('done', 'time_budget'):  # nothing was fitted
        print(f'macrl train: --fit-budget: this invocation stopped at step {step}, before the {FIT_SKIP} + '
              f'{FIT_STEPS} steps it times; the schedule stays at {total_steps} steps (its learning rate far from '
              f'its end): give a longer --time-budget, or --epochs that fit it', flush=True)
    if stop_reason == 'done' and step < total_steps:
        stop_reason = 'max_steps'  # --max-steps ended this invocation before the schedule did
    train_time = seen_time + time.time() - t_start
    if stop_reason == 'diverged':
        if log_f:
            log_f.close()
        raise TrainingDiverged(
            f'loss is {sums["loss"]} at step {step} ({ {k: round(v, 4) for k, v in sums.items()} }); stopped. The last '
            f'good checkpoint, {ckpt_path if ckpt_path.exists() else "none yet"}, is untouched: continue it in fp32 '
            f'with `macrl train --out {out} --resume auto --precision fp32`, or start a new --out with a lower --blr '
            f'or --clip-grad 1.0 (settings a resumed run may not change)')
    if master:
        _save(ckpt_path, model, opt, scaler, cfg, step, train_time, precision, data_record(data))
        summary = dict(event='end', reason=stop_reason, step=step, epochs=step / steps_per_epoch,
                       train_time=train_time, checkpoint=str(ckpt_path), first_step_s=first_step_s, **last)
        if stopper.signum is not None:
            summary['signal'] = signal.Signals(stopper.signum).name
        log_f.write(json.dumps(summary) + '\n')
        log_f.close()
        print(f'macrl train: {stop_reason} at step {step} ({step / steps_per_epoch:.2f} epochs, '
              f'{train_time / 60:.1f} min); checkpoint {ckpt_path}')
    result = dict(reason=stop_reason, step=step, train_time=train_time, checkpoint=str(ckpt_path), **last)
    if stop_reason == 'interrupted':
        result['signal'] = stopper.signum
        if master:
            print(f'macrl train: continue with `macrl train --out {out} --resume auto`', flush=True)
    elif master and cfg.final_knn:
        result['knn'] = _final_knn(cfg, model, data, test_data, out, device, precision)
    if is_dist():
        dist.barrier()
    if stop_reason == 'interrupted':
        raise TrainingInterrupted(stopper.signum, result)
    return result


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _final_knn(cfg: TrainConfig, model: MACRL, train_data, test_data, out: Path, device: torch.device,
               precision: str) -> Dict[str, Any]:
    """`macrl eval knn` of the encoder as trained (the split loaded once, the model still on its device). A test
    split with train's classes, and at least two of them, were checked before training (`_test_split`)."""
    from .evaluate import eval_knn, eval_record, write_eval_record
    t0 = time.time()
    data = cfg.data or default_data()
    with eager():
        res = eval_knn(model.encoder, data, splits=(train_data, test_data), precision=precision, device=device)
    from .evaluate import fingerprints
    record = eval_record('knn', str(out / CKPT_NAME), data, res, t0, 'macrl train --final-knn',
                         weights=fingerprints(model.encoder))
    write_eval_record(record, out / 'knn.json')
    print(f'macrl train: final kNN on {res["n_test"]} test images, bank of {res["n_train"]}: ' +
          ', '.join(f'k={k[len("knn_top1_k"):]} {v:.2f}%' for k, v in res.items() if k.startswith('knn_top1_k')) +
          f' ({time.time() - t0:.1f} s) -> {out / "knn.json"}', flush=True)
    return record


def _rank_max(values: List[float], device: torch.device) -> List[float]:
    """Each value's maximum over all ranks (one all-reduce)."""
    if not is_dist():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def _any_rank(flag: bool, device: torch.device) -> bool:
    return bool(_rank_max([flag], device)[0])


def _global_mean(v: torch.Tensor) -> float:
    """The loss averaged over ranks: what one process with the global batch would report."""
    if is_dist():
        v = v.clone()
        dist.all_reduce(v)
        v /= world_size()
    return float(v)


#: settings a resumed run may change (where and how long it runs, not what it learns)
RUN_CONTROL = ('out', 'resume', 'data', 'time_budget', 'max_steps', 'fit_budget', 'final_knn', 'ckpt_every_min',
               'ckpt_every_epochs', 'log_every', 'knn_every', 'knn_train', 'knn_test', 'tensorboard', 'progress',
               'threads', 'device', 'precision', 'compile', 'momentum_bf16', 'attention', 'keep_freed_memory', 'on_error')
#: never taken from the checkpoint on resume
PER_INVOCATION = ('out', 'resume', 'time_budget', 'max_steps', 'progress')
#: settings added after runs were saved without them: what those runs did (a recipe's newer value, e.g. --recipe
#: paper's pos_embed 'sincos', must not change a run resumed from before it)
LEGACY_DEFAULTS = {'pos_embed': 'learned'}


def _saved_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint's or config.json's settings, with LEGACY_DEFAULTS for those it predates."""
    return {**LEGACY_DEFAULTS, **config}


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v  # flags give lists, configs hold tuples


def _same(key: str, a: Any, b: Any) -> bool:
    """Equal settings; --model-args by the JSON object it holds, not its spelling."""
    if key == 'model_args' and isinstance(a, str) and isinstance(b, str):
        try:
            return json.loads(a or '{}') == json.loads(b or '{}')
        except ValueError:
            pass  # not JSON: compared as written (TrainConfig reports the bad JSON itself)
    return _norm(a) == _norm(b)


def _clashes(saved: Dict[str, Any], asked: Dict[str, Any]) -> Dict[str, tuple]:
    """{key: (saved, asked)} for the settings a resumed run may not change (all but RUN_CONTROL). Not --mean/--std:
    those are compared by what they resolve to (`_check_same_normalization`), since None means the architecture's
    cfg and a checkpoint older than these flags has no entry for them."""
    return {k: (saved[k], v) for k, v in asked.items()
            if k in saved and k not in RUN_CONTROL + NORMALIZATION and not _same(k, saved[k], v)}


def _check_same_normalization(ck: Dict[str, Any], cfg: TrainConfig, asked: Dict[str, Any], path: str) -> None:
    """A resumed run normalises as it was trained: the checkpoint's record, or for one older than the record its
    architecture's cfg; ValueError if --mean/--std (resolved) ask for something else."""
    import timm
    from .models import cfg_differences, cfg_flags, checkpoint_data_config
    recorded = checkpoint_data_config(ck)
    if not recorded:
        with torch.device('meta'):
            enc = timm.create_model(cfg.model, pretrained=False, num_classes=0, **cfg.encoder_kwargs())
        recorded = {k: tuple(enc.pretrained_cfg[k]) for k in NORMALIZATION}
    differ = cfg_differences(recorded, asked, NORMALIZATION)
    if differ:
        raise ValueError(f'cannot resume {path}: the run was trained with {cfg_flags(recorded, differ)}, this command '
                         f'asks for {cfg_flags(asked, differ)} (drop these flags to continue the run as it was, or '
                         f'start a new --out)')


def _resume_path(cfg: TrainConfig) -> Optional[Path]:
    if cfg.resume == 'auto':
        path = Path(cfg.out) / CKPT_NAME
        return path if path.is_file() else None
    return Path(cfg.resume)


def resumed_config(cfg: TrainConfig, given: Dict[str, Any]) -> TrainConfig:
    """The config to resume with: the checkpoint's, except PER_INVOCATION settings and the RUN_CONTROL flags
    given on the command line (e.g. a moved --data, another --precision on another machine).

    A flag that would change what the run learns (e.g. --alpha) and differs from the checkpoint is an error,
    so forgetting or mistyping a flag on resume can never silently change a run half way."""
    path = _resume_path(cfg)
    no_checkpoint = path is None  # --resume auto, no checkpoint yet: a new run, or one stopped before its first
    if no_checkpoint:
        path = Path(cfg.out) / 'config.json'
        if not path.is_file():
            return cfg
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f'--resume auto: {path} (a run that left no checkpoint) is unreadable ({e}); delete it '
                             'to start a new run in that folder, or choose another --out') from None
        if saved.get('fit_budget'):
            saved.pop('total_steps', None)  # fitted to the budget of an invocation that left nothing: fit again
        print(f'macrl train: {cfg.out} holds no checkpoint yet: starting its run again from step 0 with the '
              f'settings in {path}', flush=True)
    elif not path.is_file():
        raise FileNotFoundError(f'--resume {cfg.resume}: no such checkpoint')
    else:
        saved = load_checkpoint(path).get('config', {})
    saved = _saved_config(saved)
    clash = _clashes(saved, given)
    auto = any(_names_auto(given.get(k)) for k in NORMALIZATION)
    if no_checkpoint and not auto:  # no checkpoint record to resolve --mean/--std against: compared as given
        clash.update({k: (saved.get(k), given[k]) for k in NORMALIZATION
                      if k in given and _norm(given[k]) != _norm(saved.get(k))})
    if clash:
        raise ValueError('cannot resume ' + str(path) + ': ' + '; '.join(
            f'the run has --{k.replace("_", "-")} {old!r}, this command asks for {new!r}' for k, (old, new) in
            clash.items()) + ' (drop these flags to continue the run as it was, or start a new --out)')
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - set(given) - set(PER_INVOCATION)
    if auto:  # --mean auto computes both again (from the same data, as _check_same_data makes sure; the checkpoint's
        fields -= set(NORMALIZATION)  # record must then match); the other's saved numbers must not pair with it
    return dataclasses.replace(cfg, **{k: _norm(v) for k, v in saved.items() if k in fields})


def _check_resume_compatible(ck: Dict[str, Any], cfg: TrainConfig) -> None:
    for key, (old, new) in _clashes(_saved_config(ck.get('config', {})), dataclasses.asdict(cfg)).items():
        raise ValueError(f'cannot resume: checkpoint has {key}={old!r}, this run asks for {new!r}')


def data_record(data) -> Dict[str, Any]:
    """What a run trained on, as far as its schedule and data order depend on it: the image count (after
    --num-train) and the class names. Kept in the checkpoint; a resume with other data is refused."""
    return {'n_images': len(data), 'classes': list(data.classes)}


def _check_same_data(ck: Dict[str, Any], data, path: str, steps_per_epoch: int) -> None:
    had, now = ck.get('data'), data_record(data)
    if had is None:  # a checkpoint from before 2026-11-29: its log's step/epoch rows give its steps per epoch
        rows = [r for r in read_log(Path(path).parent / 'log.jsonl') if r.get('epoch') and 'lr' in r]
        was = round(rows[-1]['step'] / rows[-1]['epoch']) if rows else steps_per_epoch
        if was != steps_per_epoch:
            raise ValueError(f'--resume {path}: the run had {was} steps per epoch, --data now gives '
                             f'{steps_per_epoch} ({len(data)} images): other data than it trained on. Resume with '
                             f'the same data, or start a new run in another --out')
        return
    if had == now:
        return
    what = []
    if had['n_images'] != now['n_images']:
        what.append(f'{had["n_images"]} images, now {now["n_images"]}')
    if had['classes'] != now['classes']:
        what.append(f'classes {had["classes"][:6]}, now {now["classes"][:6]}')
    raise ValueError(f'--resume {path}: the run trained on other data than --data gives ({"; ".join(what)}). Steps '
                     f'per epoch, the schedule and the order of the images follow the data, so the run would not '
                     f'continue as it began: resume with the same data, or start a new run in another --out')


def _is_model_folder(out: Path) -> bool:
    """Whether `out` holds an exported model (model.safetensors, or a timm config.json naming an architecture),
    which a run must not write into."""
    path = out / 'config.json'
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        record = {}
    return (isinstance(record, dict) and 'architecture' in record) or (out / 'model.safetensors').is_file()


def _save(path: Path, model: MACRL, opt, scaler, cfg: TrainConfig, step: int, train_time: float, precision: str,
          data: Optional[Dict[str, Any]] = None):
    atomic_torch_save({
        'model': model.state_dict(), 'optimizer': opt.state_dict(), 'scaler': scaler.state_dict(),
        'step': step, 'train_time': train_time, 'config': dataclasses.asdict(cfg), 'arch': cfg.model,
        'model_args': cfg.encoder_kwargs(),
        'macrl': model.config, 'precision': precision, 'torch': str(torch.__version__), 'hardware': hardware(),
        'normalization': {k: list(model.encoder.pretrained_cfg[k]) for k in NORMALIZATION},
        **({'data': data} if data is not None else {}),
    }, path)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print('  --tensorboard needs the tensorboard package (pip install tensorboard); continuing without it')
        return None
    return SummaryWriter(str(out / 'tb'))


def _test_split(cfg: TrainConfig, size: int, train_data):
    """The dataset's test split, or None where it has none. Labels are class indices, so a test split whose classes
    differ from train's cannot score the kNN monitor (it did, silently wrong): --final-knn is refused before
    training, the monitor falls back to held-out training images."""
    if cfg.final_knn and len(train_data.classes) < 2:
        raise ValueError(f'--final-knn: {train_data.source} has one class ({train_data.classes[0]}), and a kNN over '
                         f'one class scores 100% whatever the encoder; drop --final-knn')
    try:
        test = load_dataset(cfg.data or default_data(), 'test', size=size, on_error='skip', progress=cfg.progress)
    except ValueError as e:
        if cfg.final_knn:  # found out now, not after the training it would have followed
            raise ValueError(f'--final-knn scores on the test split, and there is none: {e}; drop --final-knn') \
                from None
        return None
    if test.classes != train_data.classes:
        differ = class_difference(train_data.classes, test.classes, limit=6)
        if cfg.final_knn:
            raise ValueError(f'--final-knn: the train and test splits of {test.source} have different classes '
                             f'({differ}); give both splits the same class folders, or drop --final-knn')
        print(f'macrl train: the test split of {test.source} has other classes than train ({differ}); the kNN '
              'monitor uses held-out training images instead', flush=True)
        return None
    return test


def _knn_sets(cfg: TrainConfig, train_data, test_data):
    """A small fixed bank from the training split and a held-out slice: of the test split if there is one, else of
    the training images not in the bank (at most half of them), so that no query finds itself in the bank. The slice
    is still pretrained on (without labels), as every image of a train-only folder is."""
    if test_data is not None:
        return train_data.subset(cfg.knn_train, seed=1), test_data.subset(cfg.knn_test, seed=1)
    n = len(train_data)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    n_held = min(cfg.knn_test, n // 2)
    n_bank = min(cfg.knn_train, n - n_held)
    return (train_data.select(perm[n_held:n_held + n_bank].sort().values),
            train_data.select(perm[:n_held].sort().values))


def _online_knn(model: MACRL, sets, device: torch.device, precision: str) -> Dict[int, float]:
    from .features import extract_features
    from .knn import knn_accuracy
    bank, held = sets
    fb = extract_features(model.encoder, bank.images, device=device, precision=precision, progress=False)
    fh = extract_features(model.encoder, held.images, device=device, precision=precision, progress=False)
    return knn_accuracy(fb, bank.labels.to(fb.device), fh, held.labels.to(fb.device), len(bank.classes))


def main(argv: Optional[list] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(prog='macrl train', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser)
    cfg = config_from_args(parser.parse_args(argv))
    given = argparse.ArgumentParser(add_help=False)
    add_dataclass_args(given, suppress_defaults=True)
    given = vars(given.parse_known_args(argv)[0])
    cfg = apply_recipe(cfg, given)  # the recipe's values where no flag was given
    if cfg.resume:  # `--out X --resume auto` is enough: the run's own settings come from its checkpoint
        cfg = resumed_config(cfg, given)
    check_flags(cfg.objective, given)
    try:
        return train(cfg)
    except TrainingInterrupted as e:  # a checkpoint was written; not a finished run for a script
        raise SystemExit(128 + e.signum) from None


if __name__ == '__main__':
    main()
