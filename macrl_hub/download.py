"""`macrl download`: published weights from the Hub into a local weights folder, for pip installs and offline use.

    macrl download macrl_vit_small_p4_cifar.cifar10 [macrl_vit_tiny_p4_cifar ...] [--to DIR]

Writes DIR/<arch>.<tag>/ with model.safetensors, config.json and README.md (the layout of model_cards/), the weights
sha256-checked against `macrl_hub.pretrained.PUBLISHED` before they are put in place. A bare arch means its first
published tag. DIR defaults to $MACRL_WEIGHTS_DIR, else ~/.cache/macrl-hub/weights ($XDG_CACHE_HOME respected):
the folder `timm.create_model(name, pretrained=True)` looks in first, so loading then needs no Hub. Copy DIR to an
offline machine and point MACRL_WEIGHTS_DIR at it there. The Hub is $HF_ENDPOINT when set (a local mirror).
"""
import argparse
import os
from pathlib import Path
from typing import List, Optional

from .pretrained import (PUBLISHED, WEIGHTS_FILE, PretrainedWeightsError, _first_line, check_sha256, hub_endpoint,
                         hub_repo_id, hub_unreachable, published_name, republished, sha256_file, weights_dir)
from .weights import staging_dir

__all__ = ['MODEL_FILES', 'download', 'main']

#: What a model folder holds, weights last: a folder with weights is a complete one.
MODEL_FILES = ('config.json', 'README.md', WEIGHTS_FILE)


def _download_one(name: str, to: Path) -> Path:
    folder = to / name
    if all((folder / f).is_file() for f in MODEL_FILES) and sha256_file(folder / WEIGHTS_FILE) == PUBLISHED[name]:
        return folder
    from huggingface_hub import hf_hub_download
    repo_id = hub_repo_id(name)
    offline = hub_unreachable(repo_id)
    if offline:
        raise PretrainedWeightsError(
            f'cannot download {name!r}: the Hugging Face Hub cannot be reached ({offline}). Run `macrl download` '
            f'where it can and copy the folder here (MACRL_WEIGHTS_DIR), or use a local Hub mirror: '
            f'HF_ENDPOINT=http://host:port')
    with staging_dir(folder) as staging:  # nothing reaches `folder` until every file is in and checked
        def fetch(f: str, force: bool = False) -> None:
            try:
                hf_hub_download(repo_id=repo_id, filename=f, local_dir=staging, endpoint=hub_endpoint(),
                                force_download=force)
            except Exception as e:  # 404, auth, connection lost: name the file and the repo
                raise PretrainedWeightsError(
                    f'cannot download {f} of {name!r} from {hub_endpoint()}/{repo_id}: {_first_line(e)}') from e
        for f in MODEL_FILES:
            fetch(f)
        try:
            check_sha256(staging / WEIGHTS_FILE, name)
        except PretrainedWeightsError:  # a corrupt copy (a cache's): the Hub's, once
            fetch(WEIGHTS_FILE, force=True)
            check_sha256(staging / WEIGHTS_FILE, name, fix=republished(name, repo_id) +
                         f' Nothing was written to {folder}.', shown=f'{WEIGHTS_FILE} of {hub_endpoint()}/{repo_id}')
        folder.mkdir(exist_ok=True)
        for f in MODEL_FILES:
            os.replace(staging / f, folder / f)
    return folder


def download(names: List[str], to: Optional[os.PathLike] = None) -> List[Path]:
    """Fetch each published `arch.tag` (or `arch`) into `to`/<arch>.<tag>/ (default: `weights_dir()`); the folders.

    Every name is checked before anything is fetched; a folder already holding the published weights is kept.
    """
    to = Path(to).expanduser() if to else weights_dir()
    names = [published_name(n) for n in names]
    made = not to.exists()
    try:
        return [_download_one(name, to) for name in dict.fromkeys(names)]
    except BaseException:
        if made and to.is_dir() and not any(to.iterdir()):  # a failed first download leaves no empty folder
            to.rmdir()
        raise


def main(argv: Optional[list] = None) -> List[Path]:
    p = argparse.ArgumentParser(prog='macrl download', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('names', nargs='+', metavar='NAME', help='published <arch>.<tag> (see `macrl models`), or <arch>')
    p.add_argument('--to', default=None, help=f'folder to fill (default: $MACRL_WEIGHTS_DIR, else {weights_dir()})')
    args = p.parse_args(argv)
    try:
        folders = download(args.names, args.to)
    except PretrainedWeightsError as e:  # not a traceback: one message and status 1
        raise SystemExit(f'macrl download: error: {e}') from None
    for folder in folders:
        print(folder)
    to = folders[0].parent
    if to.resolve() != weights_dir().resolve():
        print(f'set MACRL_WEIGHTS_DIR={to} to load these with timm.create_model(name, pretrained=True)')
    return folders


if __name__ == '__main__':
    main()
