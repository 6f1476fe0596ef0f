"""Where published MACRL weights live, and the one resolver that finds and checks them.

One table (`PUBLISHED`) maps `arch.tag` to the sha256 of its `model.safetensors` (open_clip's
habit: one table, helpers read it); a tag whose sha256 is None is planned, not trained, and is not
registered in timm. `resolve_weights()` looks in the weights folder (`MACRL_WEIGHTS_DIR`, filled by
`macrl download`), then in a checkout's `model_cards/`, then on the Hugging Face Hub, and refuses a
file whose hash differs from the table. Only safetensors are ever loaded here.
"""
import hashlib
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = [
    'PUBLISHED', 'DEFAULT_HF_ORG', 'MODEL_CARDS_DIR', 'HUB_TIMEOUT_S', 'hf_org', 'hub_repo_id', 'hub_endpoint',
    'local_weights_path', 'weights_dir', 'local_sources', 'hub_unreachable', 'resolve_weights', 'sha256_file',
    'check_sha256', 'list_published', 'list_planned', 'published_name', 'PretrainedWeightsError',
]

#: The Hugging Face organisation our weights are published under (override: `MACRL_HF_ORG`).
DEFAULT_HF_ORG = 'macrl-hub'
#: `model_cards/` of a checkout or editable install: one folder per published `arch.tag`. A wheel has none.
MODEL_CARDS_DIR = Path(__file__).resolve().parent.parent / 'model_cards'
WEIGHTS_FILE = 'model.safetensors'
#: How long one question to the Hub may take before it counts as unreachable (one try, no retries).
HUB_TIMEOUT_S = 5.0

#: arch.tag -> sha256 of model.safetensors, or None while the tag is planned (declared, not trained yet); only
#: tags with a sha256 are registered in timm.
PUBLISHED: Dict[str, Optional[str]] = {
    'macrl_vit_tiny_p4_cifar.cifar10': '5e948a920fc61a44ef3fe3e86940caf3d5f414fa19270be53cada89d04cf72fc',
    'macrl_vit_tiny_p4_cifar.cifar10_lin': '616a1cf657b72a5a5bbc5e49802412721c6544bb26aff6df9c46e0500ae04bdb',
    'macrl_vit_tiny_p4_cifar.cifar100': None,
    'macrl_vit_small_p4_cifar.cifar10': '6edb749f849f59be9a56e416e14b7312b164e9b82c6c036d9df2beb9f93cc3fa',
    'macrl_vit_small_p4_cifar.cifar10_lin': '297d9f0411e5f7876a886f0b5bf2bb8ddd61af1c9f56938424ad56bcd6ec31e1',
    'macrl_vit_small_p4_cifar.cifar100': None,
    'macrl_vit_medium_p4_cifar.cifar10': None,
    'macrl_vit_medium_p4_cifar.cifar10_lin': None,  # the probe's head folded in, as for tiny and small
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


def hub_endpoint() -> str:
    """The Hub (or mirror) to ask: `HF_ENDPOINT` read now, so setting it after `import huggingface_hub` works."""
    from huggingface_hub import constants
    return (os.environ.get('HF_ENDPOINT') or constants.ENDPOINT).rstrip('/')


def _hub_offline() -> bool:
    from huggingface_hub import constants
    offline = getattr(constants, 'is_offline_mode', None)  # huggingface_hub >= 1.3; before, a constant
    return (offline() if offline else bool(getattr(constants, 'HF_HUB_OFFLINE', False))) or \
        os.environ.get('HF_HUB_OFFLINE', '').upper() in ('1', 'ON', 'YES', 'TRUE')


def local_weights_path(name: str) -> Path:
    """Where a checkout keeps `arch.tag`'s weights (model_cards/)."""
    return MODEL_CARDS_DIR / name / WEIGHTS_FILE


def weights_dir() -> Path:
    """The local weights folder (`arch.tag/` model folders): `MACRL_WEIGHTS_DIR`, else a per-user cache folder."""
    env = os.environ.get('MACRL_WEIGHTS_DIR')
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'macrl-hub' / 'weights'


def local_sources(name: str) -> List[Tuple[str, Path]]:
    """(where, path) of every local copy of `arch.tag`'s weights the resolver tries, in order."""
    env = os.environ.get('MACRL_WEIGHTS_DIR')
    where = f'MACRL_WEIGHTS_DIR={env}' if env else 'the default weights folder (MACRL_WEIGHTS_DIR is not set)'
    sources = [(where, weights_dir() / name / WEIGHTS_FILE)]
    if MODEL_CARDS_DIR.is_dir():  # a checkout; a wheel's site-packages/../model_cards never exists
        sources.append(("this checkout's model_cards/", local_weights_path(name)))
    return sources


def list_published(available_only: bool = True) -> List[str]:
    return sorted(k for k, v in PUBLISHED.items() if v or not available_only)


def list_planned() -> List[str]:
    """Declared tags without weights yet: listed by `macrl models`, not registered in timm."""
    return sorted(k for k, v in PUBLISHED.items() if not v)


def published_name(name: str) -> str:
    """`arch.tag` of published weights for `arch.tag` or `arch` (its first published tag, as timm's default).

    Raises ValueError for an unknown name, PretrainedWeightsError for a planned tag or an arch without weights.
    """
    arch, _, tag = name.partition('.')
    declared = [n for n in PUBLISHED if n.split('.')[0] == arch]
    if not declared or (tag and name not in PUBLISHED):
        raise ValueError(f'unknown pretrained weights {name!r}; published: {list_published()}, '
                         f'planned: {list_planned()}')
    if not tag:
        name = next((n for n in declared if PUBLISHED[n]), declared[0])
    if not PUBLISHED[name]:
        raise PretrainedWeightsError(
            f'no weights are published for {name!r} yet; weights exist for: {list_published() or "none"}. '
            f'Use pretrained=False for a random init, or train your own with `macrl train`.')
    return name


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, name: str, fix: str = '', shown: Optional[str] = None) -> Path:
    """`path`, if its sha256 is the one published for `name`; else PretrainedWeightsError naming both hashes and
    the file to delete (for a Hugging Face cache entry, the blob its snapshot link points to), or `fix`. `shown`:
    what to call the file instead of its path (a download's temporary copy, gone when the error is read)."""
    expected, actual = PUBLISHED[name], sha256_file(path)
    if actual != expected:
        real = Path(path).resolve()
        where = shown or (f'{path} (a link to {real})' if real != Path(path).absolute() else str(path))
        raise PretrainedWeightsError(
            f'checksum mismatch for {where}: expected sha256 {expected}, got {actual}. The file is corrupt or not '
            f'the published {name!r}; ' + (fix or f'delete {real} and retry.'))
    return path


def error_text(e: BaseException) -> str:
    """One line saying what went wrong: the message's first line, and for huggingface_hub's HTTP errors, whose first
    line is only the status ("404 Client Error."), the line after it that names the cause; a 401/403 says where a
    token comes from."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    text = lines[0]
    if len(lines) > 1 and re.match(r'\d{3} (Client|Server) Error\.', text):
        text = f'{text} {lines[1]}'
    if re.match(r"(40[13] Client Error\.|Client error '40[13])", lines[0]):  # an HTTP answer, not any '401' in a path
        text += ' (a token with access to it: HF_TOKEN or `hf auth login`)'
    return text


def _first_line(e: BaseException) -> str:
    return f'{type(e).__name__}: {error_text(e)}'


def hub_timeout() -> float:
    """Seconds to wait for the Hub's answer: huggingface_hub's own HF_HUB_ETAG_TIMEOUT where set (a slow link),
    else HUB_TIMEOUT_S."""
    value = os.environ.get('HF_HUB_ETAG_TIMEOUT')
    return float(value) if value else HUB_TIMEOUT_S


def hub_unreachable(repo_id: str, filename: str = WEIGHTS_FILE) -> Optional[str]:
    """Why the Hub cannot be asked for `repo_id` now (offline mode, no answer), or None when it answers.

    Without it, `hf_hub_download` retries a failed connection with backoff before it falls back to its cache: 23 s
    when the name does not resolve, 393 s against a server that never answers (measured). One HEAD with a
    `HUB_TIMEOUT_S` timeout and no retries answers the same question. A 4xx is an answer: the download that follows
    reports it. Not bounded here: name resolution (the OS's), and huggingface_hub's own first request in a process
    (an agent-registry fetch, 3 s timeout, skipped with HF_HUB_DISABLE_TELEMETRY=1).
    """
    if _hub_offline():
        return 'HF_HUB_OFFLINE is set'
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    endpoint = hub_endpoint()
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, endpoint=endpoint), timeout=hub_timeout())
    except HfHubHTTPError as e:
        status = getattr(getattr(e, 'response', None), 'status_code', None)
        if status is not None and status < 500:
            return None
        return f'{endpoint} answered HTTP {status}'
    except Exception as e:  # connection refused, DNS, timeout: the Hub is unreachable, whatever the cause
        return f'{endpoint} is unreachable ({_first_line(e)})'
    return None


def not_found_message(name: str, tried: List[str], offline: Optional[str]) -> str:
    """One message: what was asked, every place looked in, and the ways out."""
    why = 'the Hugging Face Hub cannot be reached' if offline else 'the Hugging Face Hub did not provide it'
    return '\n'.join([
        f'no copy of the {name!r} weights was found and {why}. Looked in:',
        *[f'  {i}. {t}' for i, t in enumerate(tried, 1)],
        'Ways out:',
        f'  - put the model folder {name}/ (model.safetensors, config.json; the model_cards/ layout) in a folder '
        f'and set MACRL_WEIGHTS_DIR to that folder',
        f'  - where the Hub is reachable, run `macrl download {name} --to DIR`, then copy DIR here and set '
        f'MACRL_WEIGHTS_DIR=DIR (without --to it fills {weights_dir()}, looked in first)',
        f"  - load a model folder directly: timm.create_model('local-dir:/path/to/{name}', pretrained=True)",
        '  - use a local Hub mirror: HF_ENDPOINT=http://host:port (and HF_HUB_OFFLINE unset)',
        '  - or pretrained=False for a random init',
    ])


def resolve_weights(name: str, cache_dir: Optional[os.PathLike] = None) -> Path:
    """Path of the verified `model.safetensors` for `arch.tag`: weights folder, checkout, then the Hub.

    Offline (`HF_HUB_OFFLINE`, or the Hub unreachable within `HUB_TIMEOUT_S`) only the Hugging Face cache is
    tried after the local folders, so a missing file fails in seconds, with a message naming every place looked in.
    A cached copy that fails its sha256 is fetched again once when the Hub answers. `cache_dir`: the Hugging Face
    cache to use (timm.create_model's `cache_dir`; default HF_HUB_CACHE). A Hub download also caches the repo's
    config.json, so the same model loads offline later by its `hf-hub:` id too.
    """
    name = published_name(name)
    tried = []
    for where, path in local_sources(name):
        if path.is_file():
            return check_sha256(path, name)
        tried.append(f'{where}: {path} (not found)')
    from huggingface_hub import constants, hf_hub_download
    repo_id = hub_repo_id(name)
    offline = hub_unreachable(repo_id)
    try:
        path = Path(hf_hub_download(repo_id=repo_id, filename=WEIGHTS_FILE, endpoint=hub_endpoint(),
                                    cache_dir=cache_dir, local_files_only=offline is not None))
    except Exception as e:  # offline and not cached, 404, auth: say where we looked, keep the cause
        url = f'{hub_endpoint()}/{repo_id}/resolve/main/{WEIGHTS_FILE}'
        if offline:
            tried += [f'the Hugging Face Hub: {url} ({offline})',
                      f'the Hugging Face cache: {cache_dir or constants.HF_HUB_CACHE} (not there)']
        else:
            tried.append(f'the Hugging Face Hub: {url} ({_first_line(e)})')
        raise PretrainedWeightsError(not_found_message(name, tried, offline)) from e
    try:
        check_sha256(path, name)
    except PretrainedWeightsError:
        if offline is not None:
            raise
        path = Path(hf_hub_download(repo_id=repo_id, filename=WEIGHTS_FILE, endpoint=hub_endpoint(),  # a corrupt
                                    cache_dir=cache_dir, force_download=True))  # cached copy: the Hub's again, once
        check_sha256(path, name, fix=republished(name, repo_id))
    if offline is None:
        _cache_config(repo_id, cache_dir)
    return path


def _cache_config(repo_id: str, cache_dir: Optional[os.PathLike]) -> None:
    """Put the repo's config.json in the Hugging Face cache beside the weights, so that the same model loaded later
    as `timm.create_model('hf-hub:<repo_id>', pretrained=True)` needs no network either. Best effort: the weights
    are what was asked for, and a Hub that served them but not this file is not an error here."""
    from huggingface_hub import hf_hub_download
    try:
        hf_hub_download(repo_id=repo_id, filename='config.json', endpoint=hub_endpoint(), cache_dir=cache_dir)
    except Exception:
        pass


def republished(name: str, repo_id: str) -> str:
    """The way out when a fresh download from the Hub fails the sha256 this macrl_hub version publishes: not
    corruption that a retry mends, but other weights on the Hub (re-published since)."""
    return (f'{hub_endpoint()}/{repo_id} now serves other weights than the {name!r} this macrl_hub version was '
            f'released with (re-published since?). Upgrade macrl_hub (pip install -U macrl-hub), or load the Hub\'s '
            f"file as it is: timm.create_model('hf-hub:{repo_id}', pretrained=True).")
