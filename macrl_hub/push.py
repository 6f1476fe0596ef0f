"""Upload a model folder to the Hugging Face Hub: `macrl push` (also `python -m macrl_hub.push`).

    macrl push model_cards/macrl_vit_tiny_p4_cifar.cifar10 --repo-id my-org/macrl_vit_tiny_p4_cifar.cifar10
    macrl push model_cards/mine.cifar10 --repo-id my-org/mine.cifar10 --private --revision dev

The token comes from the usual places (HF_TOKEN, `hf auth login`). The repo is created if needed (private with
--private, else the account's default visibility), and --revision's branch too. One commit makes the repo hold
exactly the folder's model files (those `macrl export` writes): other files in the folder are not uploaded, and an
earlier push's export file that the folder no longer has (say pretrain.safetensors) is deleted from the repo. The
card's loading code (`hf-hub:<repo id>[@revision]`) is rewritten to name where it went, in the folder too once the
commit has landed, so that the folder stays what the repo holds.
"""
import argparse
import re
from pathlib import Path
from typing import Optional

from .export import EXPORT_FILES

__all__ = ['push', 'main']

REQUIRED = ('model.safetensors', 'config.json', 'README.md')


def push(folder: str, repo_id: str, private: Optional[bool] = None, revision: Optional[str] = None,
         message: str = 'Upload MACRL model') -> str:
    """Commit the model files of `folder` to `repo_id` (see the module docstring); the commit's URL. Everything is
    checked before anything is sent, and the folder changes only after the commit landed."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
    from .export import check_repo_id
    path = Path(folder)
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if missing:
        raise ValueError(f'{path} is not a model folder: missing {missing} (make one with `macrl export`)')
    check_repo_id(repo_id)
    if not get_token():
        raise ValueError('no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)')
    target = repo_id + (f'@{revision}' if revision else '')
    card = path / 'README.md'
    text = card.read_text()
    new = _point_card_at(text, target)
    files = [f for f in EXPORT_FILES if (path / f).is_file()]
    others = sorted(p.name for p in path.iterdir() if p.name not in files)
    api = HfApi()
    repo_id = api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True).repo_id
    if private and not api.repo_info(repo_id).private:  # it existed, public: never publish what was asked private
        raise ValueError(f'{repo_id} already exists and is public, and --private was asked: nothing was uploaded. '
                         'Make it private first (its settings page on the Hub, or HfApi().update_repo_settings('
                         f'{repo_id!r}, private=True)), or push without --private')
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    stale = [f for f in api.list_repo_files(repo_id, revision=revision) if f in EXPORT_FILES and f not in files]
    ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=new.encode() if f == 'README.md' else str(path / f))
           for f in files] + [CommitOperationDelete(path_in_repo=f) for f in stale]
    info = api.create_commit(repo_id, ops, commit_message=message, revision=revision)
    if new != text:
        from .weights import atomic_open
        with atomic_open(card, 'w') as f:
            f.write(new)
        print(f'macrl push: {card} now loads from hf-hub:{target}')
    if others:
        print(f'macrl push: not uploaded (not model files): {", ".join(others)}')
    if stale:
        print(f'macrl push: deleted from the repo (no longer in the folder): {", ".join(stale)}')
    return str(getattr(info, 'commit_url', info))


def _point_card_at(text: str, target: str) -> str:
    """The card with every quoted `'hf-hub:<id>'` of its loading code naming `target` (`org/name[@revision]`)."""
    return re.sub(r"'hf-hub:[^'\n]+'", lambda m: f"'hf-hub:{target}'", text)  # (any id an older export wrote)


def main(argv: Optional[list] = None) -> str:
    p = argparse.ArgumentParser(prog='macrl push', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folder')
    p.add_argument('--repo-id', required=True, help='<user or org>/<name> on the Hub')
    p.add_argument('--private', action='store_true', default=None,
                   help='create the repo private (default: the account\'s default visibility)')
    p.add_argument('--revision', default=None, help='branch to commit to (created from main if needed)')
    a = p.parse_args(argv)
    url = push(a.folder, a.repo_id, a.private, a.revision)
    print(f'macrl push: {a.folder} -> {url}')
    return url


if __name__ == '__main__':
    main()
