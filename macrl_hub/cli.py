"""The `macrl` command: one entry point, one subcommand per module.

    macrl train ...      pretrain (macrl_hub/train.py)
    macrl eval ...       knn | linear | finetune (macrl_hub/evaluate.py)
    macrl models         architectures, tags, and whether weights are available locally
"""
import sys
from typing import List, Optional

__all__ = ['main']

_COMMANDS = {
    'train': ('macrl_hub.train', 'pretrain an encoder with MACRL / MAE / MoCo'),
    'eval': ('macrl_hub.evaluate', 'kNN, linear probe or fine-tune evaluation'),
    'models': ('macrl_hub.listing', 'list architectures and pretrained tags'),
    'download': ('macrl_hub.download', 'fetch published weights into a local weights folder (MACRL_WEIGHTS_DIR)'),
    'export': ('macrl_hub.export', 'write model_cards/<arch>.<tag>/ from a checkpoint'),
    'push': ('macrl_hub.push', 'upload a model folder to the Hugging Face Hub'),
    'viz': ('macrl_hub.viz', 'attention maps and reconstructions'),
    'demo': ('macrl_hub.demo', 'published encoder -> kNN on CIFAR-10 -> attention-map PNG'),
}


def main(argv: Optional[List[str]] = None) -> int:
    import importlib
    import importlib.util
    argv = sys.argv[1:] if argv is None else argv
    available = {k: v for k, v in _COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}
    if not argv or argv[0] in ('-h', '--help'):
        print('usage: macrl <command> [options]   (macrl <command> -h for its options)\n\ncommands:')
        for name, (mod, help_) in available.items():
            print(f'  {name:8s} {help_}')
        return 0
    cmd = argv[0]
    if cmd not in available:
        print(f'macrl: unknown command {cmd!r}; choose from {", ".join(available)}', file=sys.stderr)
        return 2
    module = importlib.import_module(_COMMANDS[cmd][0])
    sys.argv = [f'macrl {cmd}'] + argv[1:]
    try:
        module.main(argv[1:])
    except (ValueError, OSError) as e:  # bad input: one clear line, no traceback
        print(f'macrl {cmd}: error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
