"""Record the sha256 of published model folders in macrl_hub/pretrained.py's PUBLISHED table.

    python benchmarks/register_weights.py macrl_vit_tiny_p4_cifar.cifar10 macrl_vit_tiny_p4_cifar.cifar10_lin

Reads model_cards/<name>/model.safetensors, checks it loads into its architecture, and rewrites the
table's line for <name>. Run it after every `macrl export` of a published tag.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(names):
    import timm
    import macrl_hub  # noqa: F401
    from macrl_hub.pretrained import MODEL_CARDS_DIR, PUBLISHED, sha256_file
    from macrl_hub.weights import load_safetensors
    src = ROOT / 'macrl_hub' / 'pretrained.py'
    text = src.read_text()
    for name in names:
        if name not in PUBLISHED:
            raise SystemExit(f'{name!r} is not declared in PUBLISHED; add the tag first')
        path = MODEL_CARDS_DIR / name / 'model.safetensors'
        sd = load_safetensors(path)
        arch = name.split('.')[0]
        n_cls = sd['head.weight'].shape[0] if 'head.weight' in sd else 0
        timm.create_model(arch, num_classes=n_cls).load_state_dict(sd)  # strict
        sha = sha256_file(path)
        text, n = re.subn(rf"('{re.escape(name)}': )(None|'[0-9a-f]{{64}}')", rf"\g<1>'{sha}'", text)
        if n != 1:
            raise SystemExit(f'could not find the PUBLISHED line of {name!r}')
        print(f'{name}: {sha}')
    src.write_text(text)


if __name__ == '__main__':
    main(sys.argv[1:])
