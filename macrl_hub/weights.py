"""Reading and writing weight files safely: safetensors only, clear errors, atomic writes."""
import contextlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Dict, Iterator

import torch

__all__ = ['load_safetensors', 'load_checkpoint', 'save_safetensors', 'atomic_open', 'atomic_torch_save', 'staging_dir',
           'WeightsFileError']


class WeightsFileError(ValueError):
    """A weights file is missing, truncated, corrupt or not safetensors."""


def load_safetensors(path: os.PathLike) -> Dict[str, torch.Tensor]:
    """Load a safetensors file to CPU; a pickle or a damaged file gets one clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f'weights file not found: {path}')
    with open(path, 'rb') as f:
        head = f.read(8)
    if head[:2] == b'\x80\x02' or head[:2] == b'PK':
        raise WeightsFileError(f'{path} is a pickle/zip torch checkpoint, not safetensors; published weights '
                               f'are safetensors only (pickles can run code when loaded)')
    try:
        return load_file(str(path), device='cpu')
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise WeightsFileError(f'{path} is not a readable safetensors file (truncated or corrupt?): {e}') from None


#: where a pickled class means a whole model was saved (torch.save(model)), not a checkpoint dict
_MODEL_MODULES = ('torch.nn.', 'timm.', 'macrl_hub.', 'torchvision.models.', 'transformers.', 'open_clip.')


def load_checkpoint(path: os.PathLike) -> Any:
    """`torch.load(path, weights_only=True)` to CPU; a file that is not a readable torch checkpoint (text, empty,
    truncated, a pickle of other objects, safetensors) gets one WeightsFileError naming the file and the problem."""
    import pickle
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f'checkpoint not found: {path}')
    with open(path, 'rb') as f:
        head = f.read(16)
    if not head:
        raise WeightsFileError(f'{path} is empty (0 bytes), not a torch checkpoint')
    if head[:2] != b'PK' and head[:1] != b'\x80':  # torch.save writes a zip, or (legacy) a raw pickle
        kind = 'it is a safetensors file' if head[8:9] == b'{' else f'it starts with {head!r}'
        raise WeightsFileError(f'{path} is not a torch checkpoint ({kind})')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'weights_only' not in str(e):  # e.g. 'pickle data was truncated'
            raise WeightsFileError(f'{path} is not a readable torch checkpoint (truncated or corrupt?): '
                                   f'{type(e).__name__}: {e}') from None
        found = re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(e))
        name = found.group(1) if found else ''
        what = f'a pickled {name}' if name else f'objects it refuses ({type(e).__name__})'
        if name.startswith(_MODEL_MODULES):  # torch.save(model): the module itself, not its weights
            fix = ('a whole model saved with torch.save(model)? Save its weights instead, '
                   'torch.save(model.state_dict(), path) (or macrl_hub.export.save_for_timm(model, folder) for a '
                   'folder plain timm loads), and pass that')
        else:  # e.g. another trainer's checkpoint dict with its argparse.Namespace or numpy scalars beside the weights
            fix = ('if the file is yours or you trust it, load it with torch.load(path, weights_only=False) and save '
                   'the weights alone (e.g. torch.save(ck["model"], path); a whole model: model.state_dict())')
        raise WeightsFileError(f'{path} holds {what}, which torch.load(weights_only=True) does not unpickle: '
                               f'checkpoints here hold tensors and plain containers only; {fix}') from None
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, OSError) as e:
        first = str(e).strip().split('. ')[0].splitlines()[0] if str(e).strip() else ''  # torch's first sentence
        raise WeightsFileError(f'{path} is not a readable torch checkpoint (truncated or corrupt?): '
                               f'{type(e).__name__}: {first}') from None


def save_safetensors(state_dict: Dict[str, torch.Tensor], path: os.PathLike, metadata: Dict[str, str] = None) -> None:
    """Write contiguous CPU tensors to `path` atomically (a crash leaves the old file intact)."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        save_file(sd, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; published files are meant to be read
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX: the new directory entry survives a power cut); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: os.PathLike, mode: str = 'wb') -> Iterator[IO]:
    """A temp file beside `path` to write; on a clean exit it is fsynced and `os.replace`d onto `path` (atomic on
    POSIX: readers and a power cut see the old file or the new one, never part of one; the folder is fsynced too),
    keeping the permissions of the file it replaces; on an error it is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        else:  # mkstemp makes 0600; a new file gets what open() would give it (0666 less the umask)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def staging_dir(folder: os.PathLike) -> Iterator[Path]:
    """A fresh hidden folder beside `folder` (`.<name>.XXXX.partial`, same filesystem, so `os.replace` from it into
    `folder` is atomic per file) to write a set of files into; removed on exit, whatever happens. The caller moves
    the files in once all are written, so a failure half-way leaves `folder` as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f'.{folder.name}.', suffix='.partial'))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_torch_save(obj: Any, path: os.PathLike) -> None:
    """`torch.save` through `atomic_open`: a crash mid-write leaves the previous file intact."""
    with atomic_open(path) as f:
        torch.save(obj, f)
