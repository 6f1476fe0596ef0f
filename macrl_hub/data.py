"""Datasets as in-memory uint8 tensors: torchvision CIFAR, ImageFolder trees and tar archives.

Small-image SSL on a 2-core machine is decode- and Python-bound if done per image per epoch, so a
split is decoded once into a `(N, 3, H, W)` uint8 tensor (CIFAR-10 train: 150 MB) and every epoch
works batch-wise on tensors (`macrl_hub.transforms`). For your own training loop, `ImageDataset` wraps the same
splits as a `torch.utils.data.Dataset` of `(PIL image, label)` pairs, the input of timm's `create_transform`
and of any torchvision transform.

`--data` accepts:
  cifar10 | cifar100                 torchvision, downloaded to $MACRL_DATA_ROOT or ~/.cache/macrl when online
  path/to/folder                     ImageFolder: <folder>/<split>/<class>/*.jpg, or <folder>/<class>/*
  path/to/archive.tar[.gz|.xz]|.tgz  the same tree inside an archive (read without unpacking), e.g.
                                     cifar10-jpeg.tar.xz (train/<class>/*.jpg, test/...), imagenette2-160.tgz
"""
import io
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ['ImageTensors', 'ImageDataset', 'load_dataset', 'decode_images', 'default_data', 'IMG_EXTENSIONS',
           'DataError', 'channel_stats', 'class_difference']

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm')
ARCHIVE_SUFFIXES = ('.tar', '.tar.gz', '.tgz', '.tar.xz', '.txz', '.tar.bz2')
TORCHVISION_SETS = ('cifar10', 'cifar100')
SPLIT_ALIASES = {'train': ('train', 'training'), 'test': ('test', 'val', 'validation', 'valid'),
                 'val': ('val', 'validation', 'valid', 'test')}
#: other names of a split, e.g. --split validation for --split val
_SPLIT_SPELLINGS = {'training': 'train', 'validation': 'val', 'valid': 'val'}
SPLIT_NAMES = tuple(sorted({a for aliases in SPLIT_ALIASES.values() for a in aliases}))
#: split names no class folder has: one inside a class folder means --data points at the wrong level ('valid' is
#: also a class name, e.g. beside 'invalid')
_SPLIT_FOLDERS = frozenset(SPLIT_NAMES) - {'valid'}


def _hidden(name: str) -> bool:
    """Names skipped from the split folder down, as torchvision's ImageFolder does: dot files and folders
    (.DS_Store, macOS's ._x.jpg, .ipynb_checkpoints/, .git/)."""
    return name.startswith('.') and name not in ('.', '..')


class DataError(ValueError):
    """A dataset could not be read: a missing split or class, an empty split, an unreadable image."""


@dataclass
class ImageTensors:
    images: Tensor  # (N, 3, H, W) uint8
    labels: Tensor  # (N,) int64
    classes: List[str]
    source: str = ''
    skipped: int = 0  # unreadable images skipped while loading

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, n: int, seed: int = 0) -> 'ImageTensors':
        """A fixed class-balanced-in-expectation random subset of `n` images (all if n >= N)."""
        if n <= 0 or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return self.select(idx)

    def select(self, idx: Tensor) -> 'ImageTensors':
        """The images at `idx` (a 1-d index tensor), same classes and source."""
        return ImageTensors(self.images[idx], self.labels[idx], self.classes, self.source, self.skipped)


def channel_stats(images: Tensor, chunk: int = 4096) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) on the 0-1 scale, what --mean/--std take; in chunks
    (float64 sums), so a large split needs no float copy of itself."""
    c = images.shape[1]
    s1, s2, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)  # (C, n*H*W)
        s1 += x.sum(1)
        s2 += (x * x).sum(1)
        n += x.shape[1]
    mean = s1 / max(n, 1)
    std = (s2 / max(n, 1) - mean * mean).clamp_min(0).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def class_difference(train_classes: Sequence[str], test_classes: Sequence[str], limit: Optional[int] = None) -> str:
    """'only in train [...], only in test [...]': how two splits' class lists differ (at most `limit` of each)."""
    only_train = sorted(set(train_classes) - set(test_classes))[:limit]
    only_test = sorted(set(test_classes) - set(train_classes))[:limit]
    return f'only in train {only_train}, only in test {only_test}'


def default_data() -> Optional[str]:
    """`$MACRL_DATA` if set (a dataset spec or a path), else None."""
    return os.environ.get('MACRL_DATA') or None


def _to_rgb_uint8(img, dim16: Optional[List[bool]] = None) -> np.ndarray:
    """PIL image in any mode (L, LA, P, RGBA, I;16, CMYK, ...) -> (H, W, 3) uint8. `dim16` gets a True for a 16-bit
    image whose values all fit in 8 bits (8-bit data saved as 16-bit: it decodes near-black)."""
    from PIL import Image
    if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):  # 16-bit (a 16-bit PNG opens as I;16 or I): its full range,
        arr = np.asarray(img, dtype=np.float32)  # the same for every image (a dark one was scaled by 255 before)
        if dim16 is not None:
            dim16.append(bool(arr.max() <= 255))
        img = Image.fromarray(np.clip(arr / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode != 'RGB':
        if img.mode in ('RGBA', 'LA') or (img.mode == 'P' and 'transparency' in img.info):
            img = img.convert('RGBA')
            bg = Image.new('RGBA', img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        img = img.convert('RGB')
    return np.asarray(img, dtype=np.uint8)


def _resize_center(arr: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size` (bicubic), then a center square crop: pixel for pixel what timm's eval transform does
    with crop_pct 1.0 (torchvision's Resize(size) + CenterCrop(size) on a PIL image, the same size and offset
    rounding), which is what the config.json of an exported model tells plain timm to do."""
    from PIL import Image
    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return arr
    img = Image.fromarray(arr)
    if w <= h:  # torchvision's _compute_resized_output_size: the long side truncated
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))  # torchvision's center_crop
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _bar(desc: Optional[str], total: Optional[int] = None, unit: str = 'it') -> Any:
    """A tqdm bar on stderr described by `desc`; None when desc is None (no progress wanted)."""
    if desc is None:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def _close(bar: Any) -> None:
    if bar is not None:
        bar.close()


def _counted(items: Iterable[Any], bar: Any) -> Iterable[Any]:
    for item in items:
        bar.update(1)
        yield item


def _decode_jpeg_chunk(datas: List[Tensor], size: Optional[int] = None) -> List[Optional[np.ndarray]]:
    """(H, W, 3) uint8 arrays, each brought to `size` as soon as it is decoded (a full-resolution photo is
    ~36 MB: a folder of them must never be held at full size all at once); None = not decoded here (a bad file,
    or a torchvision without this decoder: deprecated since 0.29 for TorchCodec's), which Pillow then tries."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return [None] * len(datas)
    try:
        decoded: List[Optional[Tensor]] = list(decode_jpeg(datas, mode=ImageReadMode.RGB))
    except RuntimeError:  # one bad file fails the batch: fall back to one by one
        decoded = []
        for d in datas:
            try:
                decoded.append(decode_jpeg(d, mode=ImageReadMode.RGB))
            except RuntimeError:
                decoded.append(None)
    out: List[Optional[np.ndarray]] = []
    for i, t in enumerate(decoded):
        out.append(None if t is None else _shrink(t.permute(1, 2, 0).numpy(), size))
        decoded[i] = None  # the full-size tensor goes as soon as its small copy exists
    return out


def _shrink(arr: np.ndarray, size: Optional[int]) -> np.ndarray:
    return arr if size is None else _resize_center(arr, size)


def _chunks(datas: List[Tensor], max_items: int, max_bytes: int) -> List[List[Tensor]]:
    """Consecutive runs of at most `max_items` files and (past the first file) `max_bytes` compressed bytes."""
    chunks: List[List[Tensor]] = [[]]
    n_bytes = 0
    for d in datas:
        if chunks[-1] and (len(chunks[-1]) >= max_items or n_bytes + d.numel() > max_bytes):
            chunks.append([])
            n_bytes = 0
        chunks[-1].append(d)
        n_bytes += d.numel()
    return chunks if chunks[0] else []


def _iter_jpegs(datas: List[Tensor], chunk: int = 2048, bar: Any = None, size: Optional[int] = None,
                chunk_bytes: int = 8 << 20) -> Iterator[Optional[np.ndarray]]:
    """torchvision's libjpeg decoder over threads (it releases the GIL): CIFAR-10's 50,000 JPEGs take ~14 s on one
    core, so a 16-core machine would spend most of a short GPU run's start decoding. Yields in order; None = bad
    file. Chunks hold at most `chunk` files, `chunk_bytes` of JPEG (~10x that decoded) and ~32 MB resized, each image
    resized to `size` in its worker, so memory in flight is bounded by the workers, not the dataset. `bar`: per
    chunk."""
    from concurrent.futures import ThreadPoolExecutor
    if size is not None:  # and at most ~32 MB decoded per chunk (an upscaled split: 1,365 images at 128x128)
        chunk = min(chunk, max(1, (32 << 20) // (3 * size * size)))
    chunks = _chunks(datas, chunk, chunk_bytes)
    workers = min(len(chunks), os.cpu_count() or 1, 32)
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        for part in (map if workers <= 1 else pool.map)(lambda c: _decode_jpeg_chunk(c, size), chunks):
            if bar is not None:
                bar.update(len(part))
            yield from part


def split_bytes(n: int, size: int) -> int:
    """Bytes of `n` decoded RGB images at `size` x `size`: what a split takes in memory as one uint8 tensor."""
    return n * 3 * size * size


def available_memory() -> Optional[int]:
    """Bytes this machine can still give without swapping (Linux's MemAvailable); None where unknown."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def decode_images(
        blobs: Sequence[bytes],
        names: Sequence[str],
        size: Optional[int] = None,
        on_error: str = 'skip',
        progress: Optional[str] = None,
) -> Tuple[Tensor, List[int]]:
    """Decode encoded images to a (N_ok, 3, S, S) uint8 tensor; returns it and the indices kept.

    JPEGs go through torchvision's batched libjpeg decoder (Pillow where torchvision no longer has it, or for a
    file it cannot decode); anything else (PNG, grayscale, RGBA,
    16-bit, CMYK) through Pillow, converted to RGB. Images not `size` x `size` are resized (shorter side)
    and center-cropped as each is decoded, so memory follows `size`, not the originals (the encoded files are held
    until the end). With size=None: S is the smallest shorter side among the images, and each is center-cropped
    to S x S after being resized to it (no upscaling; images that all share one square size are kept as they are);
    every image is held at full size until then. `progress`: a description for a progress bar on stderr.
    """
    from PIL import Image
    if on_error not in ('skip', 'raise'):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    n = len(blobs)
    bar = _bar(progress, total=n, unit='img')
    # with `size` known, each image goes straight into the result (N, 3, S, S): the split is in memory once, not as
    # a list of arrays, then their stack, then its channels-first copy (3x, measured); without it they are held
    out = torch.empty((n, 3, size, size), dtype=torch.uint8) if size is not None else None
    out_np = out.numpy() if out is not None else None  # the same memory, written through numpy: PIL's arrays
    held: List[Optional[np.ndarray]] = [None] * n
    ok = [False] * n

    def put(i: int, arr: np.ndarray) -> None:
        if out is None:
            held[i] = arr
        else:
            out_np[i] = arr.transpose(2, 0, 1)  # are read-only, which torch.from_numpy warns about
        ok[i] = True

    jpeg_idx = [i for i, b in enumerate(blobs) if b[:3] == b'\xff\xd8\xff']
    jpegs = set(jpeg_idx)
    if jpeg_idx:
        with warnings.catch_warnings():  # read-only views of the files' bytes (no copy); the decoder only reads
            warnings.filterwarnings('ignore', message='The given buffer is not writable')
            datas = [torch.frombuffer(blobs[i], dtype=torch.uint8) for i in jpeg_idx]
        for i, arr in zip(jpeg_idx, _iter_jpegs(datas, bar=bar, size=size)):
            if arr is not None:
                put(i, arr)
        del datas
    bad: List[str] = []
    dim16: List[bool] = []
    for i, b in enumerate(blobs):
        if not ok[i]:
            try:
                with Image.open(io.BytesIO(b)) as img:
                    img.load()
                    put(i, _shrink(_to_rgb_uint8(img, dim16), size))
            except Exception as e:
                if on_error == 'raise':
                    _close(bar)
                    raise DataError(f'cannot decode image {names[i]}: {type(e).__name__}: {e}') from None
                bad.append(names[i])
            if bar is not None and i not in jpegs:  # (a JPEG retried here was counted with its chunk)
                bar.update(1)
    _close(bar)
    keep = [i for i in range(n) if ok[i]]
    if not keep:
        raise DataError(f'no readable image among {n} files (first: {names[0] if names else "-"})')
    if out is None:  # the smallest shorter side: a square crop of every image without upscaling any
        size = min(min(held[i].shape[:2]) for i in keep)
        out = torch.empty((len(keep), 3, size, size), dtype=torch.uint8)
        out_np = out.numpy()
        for j, i in enumerate(keep):
            out_np[j] = _resize_center(held[i], size).transpose(2, 0, 1)
            held[i] = None
    elif len(keep) < n:  # unreadable files leave gaps: close them in place (keep is sorted, so j <= i)
        for j, i in enumerate(keep):
            if j != i:
                out[j] = out[i]
        out = out[:len(keep)].clone() if len(keep) < n // 2 else out[:len(keep)]
    if bad:
        warnings.warn(f'skipped {len(bad)} unreadable image(s), e.g. {bad[:3]}')
    if any(dim16):
        warnings.warn(f'{sum(dim16)} of {len(dim16)} 16-bit images hold values up to 255 only: 16-bit images are '
                      f'scaled by their full range (65535 -> 255), so these decode near-black. 8-bit data saved as '
                      f'16-bit should be saved as 8-bit')
    return out, keep


def _split_and_class(parts: Tuple[str, ...], split_names: Tuple[str, ...]) -> Optional[Tuple[str, str]]:
    """('root', 'train', 'cat', 'x.jpg') -> ('train', 'cat') when 'train' is in split_names; images in folders
    below a class folder belong to it (('train', 'cat', 'more', 'x.jpg') too), as in torchvision's ImageFolder.
    The split folder is the deepest split-named folder above the class (`train/train/cat/x.jpg`: class cat; an
    archive's top folder named `test/` holding `train/`: no test split). Dot-named entries from the split folder
    down are skipped (above it they are the archive's own folders, e.g. `.data/`)."""
    j = max((i for i in range(len(parts) - 2) if parts[i] in SPLIT_NAMES), default=None)
    if j is None or parts[j] not in split_names or any(map(_hidden, parts[j:])):
        return None
    return parts[j], parts[j + 1]


def _collect(items: Iterable[Tuple[Tuple[str, ...], bytes]], split: str, source: str):
    """Group (path parts, bytes) by class for the first split alias present."""
    aliases = SPLIT_ALIASES.get(split, (split,))
    found: Dict[str, Dict[str, List[Tuple[str, bytes]]]] = {}
    unsplit: List[Tuple[Tuple[str, ...], bytes]] = []  # kept while no split folder has been seen: a bare tree
    present = set()
    for parts, data in items:
        present.update(p for p in parts[:-2] if p in SPLIT_NAMES)
        if present and unsplit:
            unsplit = []  # split folders after all: not a bare tree
        sc = _split_and_class(parts, aliases)
        if sc is not None:
            found.setdefault(sc[0], {}).setdefault(sc[1], []).append(('/'.join(parts), data))
        elif not present and not any(map(_hidden, parts)):
            unsplit.append((parts, data))
    for alias in aliases:
        if alias in found:
            return found[alias]
    if unsplit and not present:
        return _bare_tree(unsplit, split, source)
    raise DataError(f'split {split!r} not found in {source}: expected <{"|".join(aliases)}>/<class>/<image> '
                    f'(splits present: {sorted(present) or "none"})')


def _bare_tree(items: List[Tuple[Tuple[str, ...], bytes]], split: str, source: str):
    """An archive with no split folder, as a folder without one: <class>/<image> (below a common top folder, if
    every image has one) is the train split."""
    if split != 'train':
        raise DataError(f'split {split!r} not found in {source}: an archive without split folders is a bare '
                        f'<class>/<image> tree, the train split only; for held-out images use train/<class>/ and '
                        f'{SPLIT_ALIASES.get(split, (split,))[0]}/<class>/ in it')
    if all(len(parts) == 1 for parts, _ in items):
        raise DataError(f'{source} holds {len(items)} images but no class folders: images must be in '
                        f'[train/]<class>/<image>. Unlabelled images can all go in one folder, e.g. images/<image> '
                        f'(pretraining needs no labels; the kNN monitor is then skipped)')
    dirs = [parts[:-1] for parts, _ in items if len(parts) > 1]
    common = 0
    while all(len(d) > common + 1 and d[common] == dirs[0][common] for d in dirs):
        common += 1  # a top folder every image is in (`tar c data/`) is not a class
    by_class: Dict[str, List[Tuple[str, bytes]]] = {}
    for parts, data in items:
        if len(parts) > common + 1:  # images beside the class folders are not in a class: left out
            by_class.setdefault(parts[common], []).append(('/'.join(parts), data))
    return by_class


def _iter_archive(path: Path) -> Iterable[Tuple[Tuple[str, ...], bytes]]:
    try:
        with tarfile.open(path, 'r|*') as tar:  # streaming: no seeking, no unpacking to disk
            for m in tar:
                if m.isfile() and m.name.lower().endswith(IMG_EXTENSIONS):
                    f = tar.extractfile(m)
                    yield tuple(Path(m.name).parts), f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f'cannot read archive {path} (truncated or corrupt?): {type(e).__name__}: {e}') from None


def _iter_folder(root: Path, split: str) -> Iterable[Tuple[Tuple[str, ...], bytes]]:
    aliases = SPLIT_ALIASES.get(split, (split,))
    dirs = [p.name for p in root.iterdir() if p.is_dir() and not _hidden(p.name)]
    present = sorted(d for d in dirs if d in SPLIT_NAMES)
    if present and not set(present) & set(SPLIT_ALIASES['train']) and len(present) < len(dirs):
        present = []  # classes that happen to be called e.g. 'valid' beside 'invalid': a bare class tree
    base = next((root / a for a in aliases if a in present), None)
    if base is None and present:
        raise DataError(f'split {split!r} not found in {root}: expected <{"|".join(aliases)}>/<class>/<image> '
                        f'(splits present: {present})')
    if base is None and split != 'train':  # else the "test" images would be the training ones (kNN finds itself)
        raise DataError(f'split {split!r} not found in {root}: a bare <folder>/<class>/<image> tree is the train '
                        f'split only; for held-out images use {root}/train/<class>/ and {root}/{aliases[0]}/<class>/')
    prefix = ('.', aliases[0]) if base is None else ('.', base.name)
    base = base or root  # a bare <folder>/<class>/* tree is the train split
    n = 0
    class_dirs = sorted(p for p in base.iterdir() if p.is_dir() and not _hidden(p.name))
    for cls_dir in class_dirs:
        if cls_dir.name in _SPLIT_FOLDERS:  # train/train/<class>/: one class 'train'
            raise DataError(f'{cls_dir} is a split folder inside {base}: pass --data {base}')
        for dirpath, dirnames, filenames in os.walk(cls_dir, followlinks=True):  # sub-folders belong to the class
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            splits = sorted(_SPLIT_FOLDERS.intersection(dirnames))
            if splits:  # --data one level too high: a whole dataset would become one class, held-out images too
                raise DataError(f'{dirpath} holds split folders {splits}: it is a dataset, not a class of '
                                f'{base}; pass --data {dirpath}')
            rel = Path(dirpath).relative_to(cls_dir).parts
            for name in sorted(filenames):
                if name.lower().endswith(IMG_EXTENSIONS) and not _hidden(name):
                    n += 1
                    yield prefix + (cls_dir.name,) + rel + (name,), (Path(dirpath) / name).read_bytes()
    if n == 0:
        loose = sum(1 for p in base.iterdir() if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
        if loose and split == 'train':  # a flat folder: the natural input of pretraining, but unlabelled
            raise DataError(f'{base} holds {loose} images but no class folders: images must be in '
                            f'<folder>/[train/]<class>/<image>. Unlabelled images can all go in one folder, e.g. '
                            f'{base}/images/ (pretraining needs no labels; the kNN monitor is then skipped)')
        if loose:
            raise DataError(f'{base} holds {loose} images but no class folders: evaluation needs labelled '
                            f'held-out images, {base}/<class>/<image>, with the classes of the train split')
        raise DataError(f'split {split!r} of {root} has no images ({base} holds class folders '
                        f'{[p.name for p in class_dirs]}; images must end in {", ".join(IMG_EXTENSIONS)})')


def _load_torchvision(name: str, split: str) -> ImageTensors:
    """CIFAR-10/100 through torchvision (downloaded once to $MACRL_DATA_ROOT, default ~/.cache/macrl; 'test' is
    torchvision's train=False), as 32x32 images in torchvision's class order."""
    import torchvision
    root = Path(os.environ.get('MACRL_DATA_ROOT', Path.home() / '.cache' / 'macrl'))
    cls = torchvision.datasets.CIFAR10 if name == 'cifar10' else torchvision.datasets.CIFAR100
    try:
        ds = cls(str(root), train=(split == 'train'), download=True)
    except Exception as e:
        raise DataError(f'could not get {name} from torchvision ({type(e).__name__}: {e}); offline? Pass '
                        f'--data path/to/{name}-jpeg.tar.xz (an ImageFolder archive) or set MACRL_DATA') from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(images, torch.tensor(ds.targets, dtype=torch.long), list(ds.classes), name)


def load_dataset(spec: str, split: str = 'train', size: Optional[int] = None, on_error: str = 'skip',
                 progress: bool = True) -> ImageTensors:
    """Load a whole split as uint8 tensors. See the module docstring for what `spec` may be.

    `progress`: progress bars on stderr while a folder or archive is read and its images decoded (CIFAR-10's
    train split from the .tar.xz: ~5 s reading, ~14 s decoding on one core)."""
    split = _SPLIT_SPELLINGS.get(split, split)
    if spec is None:
        raise DataError('no dataset given: pass --data (cifar10, a folder or an archive) or set MACRL_DATA')
    if spec.lower() in TORCHVISION_SETS:
        ds = _load_torchvision(spec.lower(), split)
        if size is not None and size != ds.images.shape[-1]:  # as a folder or archive of them would be
            _check_fits(len(ds), size, split, Path(spec))
            images = torch.empty(len(ds), 3, size, size, dtype=torch.uint8)  # (N, 3, size, size)
            hwc = ds.images.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3)
            for i in range(len(ds)):
                images[i].numpy()[...] = _resize_center(hwc[i], size).transpose(2, 0, 1)
            ds.images = images
        return ds
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f'dataset {spec!r} not found: not one of {TORCHVISION_SETS}, nor an existing folder or archive')
    if path.is_dir():
        items = _iter_folder(path, split)
    elif path.name.lower().endswith(ARCHIVE_SUFFIXES):
        items = _iter_archive(path)
    else:
        raise DataError(f'{path} is neither a folder nor a tar archive ({", ".join(ARCHIVE_SUFFIXES)})')
    bar = _bar(f'reading {path.name}' if progress else None, unit=' files')
    if bar is not None:
        items = _counted(items, bar)
    try:
        by_class = _collect(items, split, str(path))
    finally:
        _close(bar)
    classes = sorted(by_class)
    empty = [c for c in classes if not by_class[c]]
    if not classes or empty:
        raise DataError(f'split {split!r} of {path} has no images' + (f' in classes {empty}' if empty else ''))
    names, blobs, labels = [], [], []
    for ci, c in enumerate(classes):
        for name, data in sorted(by_class[c]):
            names.append(name)
            blobs.append(data)
            labels.append(ci)
    _check_fits(len(blobs), size, split, path)
    desc = f'decoding {len(blobs)} {split} images from {path.name}' if progress else None
    images, keep = decode_images(blobs, names, size=size, on_error=on_error, progress=desc)
    labels_t = torch.tensor(labels, dtype=torch.long)[keep]
    return ImageTensors(images, labels_t, classes, str(path), skipped=len(blobs) - len(keep))


def _check_fits(n: int, size: Optional[int], split: str, path: Path) -> None:
    """DataError, before decoding, when a split held as one uint8 tensor cannot fit in this machine's free memory
    (it would be killed for memory part way through, after minutes of decoding)."""
    avail = available_memory()
    if size is None or avail is None or split_bytes(n, size) <= avail:
        return
    gib = 2 ** 30
    fits = avail // (3 * size * size)
    raise DataError(f'split {split!r} of {path}: {n} images at {size}x{size} take {split_bytes(n, size) / gib:.1f} GiB '
                    f'in memory (a split is decoded once and held as one uint8 tensor), and this machine has '
                    f'{avail / gib:.1f} GiB available (each training process holds its own copy). About {fits} images '
                    f'fit at this size: train on a subset of the images, or at a smaller input size')


class ImageDataset(torch.utils.data.Dataset):
    """A split as a map-style Dataset of `(transform(PIL RGB image), int label)`, like torchvision's ImageFolder.

        ds = ImageDataset('path/to/cifar10-jpeg.tar.xz', 'train', transform=timm.data.create_transform(32))
        ds = ImageDataset('cifar10', 'test')          # torchvision CIFAR-10; items are (PIL.Image, int)

    `source` is anything `load_dataset` reads (cifar10 | cifar100 | folder | tar archive; see the module
    docstring) or an already loaded `ImageTensors`. The split is decoded once into memory (uint8); each item
    is converted to a PIL image on access, so DataLoader workers share the decoded array. `size` resizes
    (shorter side) and center-crops images that are not size x size while loading; None keeps images that share
    one square size as they are, and otherwise brings every image to the smallest shorter side among them (resize,
    then center crop: one tensor holds them all). Attributes as in torchvision: `classes`, `class_to_idx`,
    `targets`.
    """

    def __init__(self, source: Union[str, ImageTensors], split: str = 'train', transform=None,
                 target_transform=None, size: Optional[int] = None, on_error: str = 'skip'):
        self.data = source if isinstance(source, ImageTensors) else load_dataset(source, split, size, on_error)
        self.transform, self.target_transform = transform, target_transform
        self.classes = list(self.data.classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = self.data.labels.tolist()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        from PIL import Image
        img = Image.fromarray(self.data.images[i].permute(1, 2, 0).numpy())  # (H, W, 3) uint8 -> RGB
        target = self.targets[i]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self) -> str:
        return (f'ImageDataset({self.data.source!r}, {len(self)} images, {len(self.classes)} classes, '
                f'transform={self.transform})')
