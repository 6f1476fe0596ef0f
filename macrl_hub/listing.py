"""`macrl models`: architectures, pretrained tags, and where their weights are available."""
import argparse
from typing import Optional

from .models import MACRL_ARCHS
from .pretrained import PUBLISHED, hub_repo_id, local_weights_path

__all__ = ['main']


def main(argv: Optional[list] = None) -> None:
    p = argparse.ArgumentParser(prog='macrl models', description=__doc__)
    p.parse_args(argv)
    for arch, a in MACRL_ARCHS.items():
        print(f'{arch}  ({a["embed_dim"]}-d, {a["depth"]} layers, {a["num_heads"]} heads, '
              f'{a["img_size"]}px, patch {a["patch_size"]})')
        for name, sha in PUBLISHED.items():
            if name.split('.')[0] != arch:
                continue
            local = local_weights_path(name)
            where = ('local: ' + str(local)) if local.is_file() else (f'hub: {hub_repo_id(name)}' if sha else '')
            state = 'published' if sha else 'not trained yet'
            print(f'    .{name.split(".", 1)[1]:14s} {state:16s} {where}')
