"""`macrl models`: architectures, pretrained tags, and where their weights are available.

Published tags are registered in timm (`timm.list_pretrained('macrl_*')`); planned ones (declared, not trained
yet) are listed here only.
"""
import argparse
from typing import Optional

from .models import MACRL_ARCHS
from .pretrained import PUBLISHED, hub_repo_id, local_sources

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
            local = next((path for _, path in local_sources(name) if path.is_file()), None)
            where = ('no weights yet' if not sha else f'local: {local}' if local else f'hub: {hub_repo_id(name)}')
            print(f'    .{name.split(".", 1)[1]:14s} {"published" if sha else "planned":10s} {where}')


if __name__ == '__main__':
    main()
