"""Where published MACRL weights live, and the one resolver that finds and checks them.

One table (`PUBLISHED`) maps `arch.tag` to the sha256 of its `model.safetensors` (open_clip's
habit: one table, helpers read it). `resolve_weights()` looks local-first, then on the Hugging Face
Hub, and refuses a file whose hash differs from the table. Only safetensors are ever loaded here.
"""
import hashlib
import os
from pathlib import Path
from typing import Dict, List, Optional

__all__ = [
    'PUBLISHED', 'DEFAULT_HF_ORG', 'MODEL_CARDS_DIR', 'hf_org', 'hub_repo_id', 'local_weights_path',
    'resolve_weights', 'sha256_file', 'list_published', 'PretrainedWeightsError',
]

#: The Hugging Face organisation our weights are published under (override: `MACRL_HF_ORG`).
DEFAULT_HF_ORG = 'macrl-hub'
#: `model_cards/` of a checkout or editable install: one folder per published `arch.tag`.
MODEL_CARDS_DIR = Path(__file__).resolve().parent.parent / 'model_cards'
WEIGHTS_FILE = 'model.safetensors'

#: arch.tag -> sha256 of model.safetensors, or None while the tag is declared but not yet trained.
PUBLISHED: Dict[str, Optional[str]] = {
    'macrl_vit_tiny_p4_cifar.cifar10': '5e948a920fc61a44ef3fe3e86940caf3d5f414fa19270be53cada89d04cf72fc',
    'macrl_vit_tiny_p4_cifar.cifar10_lin': '616a1cf657b72a5a5bbc5e49802412721c6544bb26aff6df9c46e0500ae04bdb',
    'macrl_vit_tiny_p4_cifar.cifar100': None,
    'macrl_vit_small_p4_cifar.cifar10': '6edb749f849f59be9a56e416e14b7312b164e9b82c6c036d9df2beb9f93cc3fa',
    'macrl_vit_small_p4_cifar.cifar10_lin': '297d9f0411e5f7876a886f0b5bf2bb8ddd61af1c9f56938424ad56bcd6ec31e1',
    'macrl_vit_small_p4_cifar.cifar100': None,
    'macrl_vit_medium_p4_cifar.cifar10': None,
    'macrl_vit_medium_p4_cifar.cifar100': None,
    'macrl_vit_medium_p8_64.tinyimagenet': None,
    'macrl_vit_medium_d4_p16_224.imagenette': None,
    'macrl_vit_medium_d4_p16_224.imagewoof': None,
}


class PretrainedWeightsError(RuntimeError):
    """Published weights could not be found, downloaded or verified."""


def hf_org() -> str:
    return os.environ.get('MACRL_HF_ORG', DEFAULT_HF_ORG)


def hub_repo_id(name: str) -> str:
    """Full Hub repo id for `arch.tag` (timm only auto-completes ids for the 'timm/' org)."""
    return f'{hf_org()}/{name}'


def local_weights_path(name: str) -> Path:
    return MODEL_CARDS_DIR / name / WEIGHTS_FILE


def list_published(available_only: bool = True) -> List[str]:
    return sorted(k for k, v in PUBLISHED.items() if v or not available_only)


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_weights(name: str) -> Path:
    """Path of the verified `model.safetensors` for `arch.tag`: local checkout first, then the Hub."""
    if name not in PUBLISHED:
        raise ValueError(f'unknown pretrained weights {name!r}; declared: {sorted(PUBLISHED)}')
    expected = PUBLISHED[name]
    if not expected:
        raise PretrainedWeightsError(
            f'no weights are published for {name!r} yet; weights exist for: {list_published() or "none"}. '
            f'Use pretrained=False for a random init, or train your own with `macrl train`.')
    local = local_weights_path(name)
    tried = [str(local)]
    if local.is_file():
        path = local
    else:
        repo_id = hub_repo_id(name)
        tried.append(f'hf://{repo_id}/{WEIGHTS_FILE}')
        try:
            from huggingface_hub import hf_hub_download
            path = Path(hf_hub_download(repo_id=repo_id, filename=WEIGHTS_FILE))
        except Exception as e:  # offline, 404, auth: say where we looked, keep the cause
            raise PretrainedWeightsError(
                f'could not get weights for {name!r}; looked in: {", ".join(tried)} '
                f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})') from e
    actual = sha256_file(path)
    if actual != expected:
        raise PretrainedWeightsError(
            f'checksum mismatch for {path}: expected sha256 {expected}, got {actual}. '
            f'The file is corrupt or not the published {name!r}; delete it and retry.')
    return path
