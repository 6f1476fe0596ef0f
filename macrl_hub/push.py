"""Upload a model folder to the Hugging Face Hub: `macrl push` (also `python -m macrl_hub.push`).

    macrl push model_cards/macrl_vit_tiny_p4_cifar.cifar10 --repo-id my-org/macrl_vit_tiny_p4_cifar.cifar10

The token comes from the usual places (HF_TOKEN, `hf auth login`). The repo is created if needed. The card's
loading code (`hf-hub:<repo id>`) is rewritten to name --repo-id first, in the folder too, so that the folder stays
what the repo holds.
"""
import argparse
import re
from pathlib import Path
from typing import Optional

__all__ = ['push', 'main']

REQUIRED = ('model.safetensors', 'config.json', 'README.md')


def push(folder: str, repo_id: str, private: bool = False, revision: Optional[str] = None,
         message: str = 'Upload MACRL model') -> str:
    from huggingface_hub import HfApi
    path = Path(folder)
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if missing:
        raise ValueError(f'{path} is not a model folder: missing {missing} (make one with `macrl export`)')
    _point_card_at(path / 'README.md', repo_id)
    api = HfApi()
    api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(path), repo_id=repo_id, repo_type='model', revision=revision,
                             commit_message=message)
    return str(getattr(info, 'commit_url', info))


def _point_card_at(card: Path, repo_id: str) -> None:
    """Make every `hf-hub:<id>` in the card name `repo_id` (atomic rewrite; untouched when it already does)."""
    from .weights import atomic_open
    text = card.read_text()
    new = re.sub(r"'hf-hub:[^'\s]+'", lambda m: f"'hf-hub:{repo_id}'", text)  # the loading code's strings
    if new != text:
        with atomic_open(card, 'w') as f:
            f.write(new)
        print(f'macrl push: {card} now loads from hf-hub:{repo_id}')


def main(argv: Optional[list] = None) -> str:
    p = argparse.ArgumentParser(prog='macrl push', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folder')
    p.add_argument('--repo-id', required=True, help='<org>/<name> on the Hub')
    p.add_argument('--private', action='store_true')
    p.add_argument('--revision', default=None)
    a = p.parse_args(argv)
    url = push(a.folder, a.repo_id, a.private, a.revision)
    print(f'macrl push: {a.folder} -> {url}')
    return url


if __name__ == '__main__':
    main()
