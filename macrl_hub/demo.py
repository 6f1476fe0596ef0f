"""The main job, end to end: published encoder -> kNN on CIFAR-10 -> attention-map PNG.

    macrl demo                                             # CIFAR-10 from torchvision (online)
    macrl demo --data path/to/cifar10-jpeg.tar.xz          # offline: an ImageFolder archive of CIFAR-10
    MACRL_DATA=path/to/cifar10-jpeg.tar.xz macrl demo --model macrl_vit_tiny_p4_cifar.cifar10

Writes <out>/knn.json (the same JSON line `macrl eval knn` prints) and <out>/attention.png.
"""
import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ['main']


def main(argv: Optional[list] = None) -> Dict[str, Any]:
    from .data import default_data, load_dataset
    import sys
    from .evaluate import eval_knn, eval_record, fingerprints, load_encoder, write_eval_record
    from .features import data_config
    from .runtime import keep_freed_memory
    from .transforms import eval_batch
    from .viz import attention_maps, save_grid
    p = argparse.ArgumentParser(prog='macrl demo', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='macrl_vit_tiny_p4_cifar.cifar10', help='published name, checkpoint or folder')
    p.add_argument('--data', default=None, help='default: $MACRL_DATA, else cifar10 from torchvision')
    p.add_argument('--n-train', type=int, default=0, help='kNN bank: a fixed subset of the train split (0: all)')
    p.add_argument('--n-test', type=int, default=0)
    p.add_argument('--n-images', type=int, default=8, help='test images in the attention grid')
    p.add_argument('--out', default='demo')
    a = p.parse_args(argv)
    if a.n_images < 1:
        p.error(f'--n-images {a.n_images}: the attention grid shows at least 1 image')
    keep_freed_memory()
    data = a.data or default_data() or 'cifar10'
    t0 = time.time()
    model = load_encoder(a.model).eval()
    print(f'macrl demo: {a.model} ({sum(q.numel() for q in model.parameters()) / 1e6:.1f}M params) on {data}')
    size, mean, std = data_config(model)
    test = load_dataset(data, 'test', size=size)  # read once: kNN queries and the attention images
    splits = (load_dataset(data, 'train', size=size).subset(a.n_train), test.subset(a.n_test))
    res = eval_knn(model, data, splits=splits)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # `macrl eval knn`'s record, with the fingerprint of the weights measured (export puts it on their card only)
    command = 'macrl demo ' + ' '.join(sys.argv[1:] if argv is None else argv)
    record = eval_record('knn', a.model, data, res, t0, command, weights=fingerprints(model))
    write_eval_record(record, out / 'knn.json')
    print(json.dumps(record))
    images = test.subset(a.n_images, seed=0).images
    x = eval_batch(images, size, mean, std)
    panels = {m: attention_maps(model, x, m) for m in ['last', 'rollout'] + (['chefer'] if model.num_classes else [])}
    png = save_grid(images, panels, out / 'attention.png')
    print(f'macrl demo: kNN top-1 {res["knn_top1_k200"]:.2f}% (k=200), {res["knn_top1_k20"]:.2f}% (k=20); '
          f'wrote {out / "knn.json"} and {png}')
    return record


if __name__ == '__main__':
    main()
