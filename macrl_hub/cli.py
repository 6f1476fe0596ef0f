"""The `macrl` command: one entry point, one subcommand per module.

    macrl train ...      pretrain (macrl_hub/train.py)
    macrl eval ...       knn | linear | knn+linear | finetune | classify (macrl_hub/evaluate.py)
    macrl models         architectures, tags, and whether weights are available locally
    macrl download ...   published weights into a local weights folder (macrl_hub/download.py)
    macrl export ...     a checkpoint as model_cards/<arch>.<tag>/ (macrl_hub/export.py)
    macrl push ...       a model folder to the Hugging Face Hub (macrl_hub/push.py)
    macrl viz ...        attention maps and reconstructions (macrl_hub/viz.py)
    macrl demo ...       published encoder -> kNN on CIFAR-10 -> attention-map PNG (macrl_hub/demo.py)
    macrl --version      the installed macrl-hub version
    macrl --debug <command> ...   on an error, the full traceback instead of one line

Exit status: 0 done, 1 the command failed (one line `macrl <command>: error: ...` on stderr), 2 a usage error
(bad or missing flags, unknown command), 130 interrupted.
"""
import sys
from typing import List, Optional

__all__ = ['main', 'version']

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
_USAGE = 'usage: macrl [--version] [--debug] <command> [options]   (macrl <command> -h for its options)'


def version() -> str:
    """The installed distribution's version; the package's own `__version__` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version as dist_version
    try:
        return dist_version('macrl-hub')
    except PackageNotFoundError:
        from . import __version__
        return __version__


def _one_line(e: BaseException) -> str:
    """The error as one line: our messages are one line already; a library's may span many (its first, and for a
    Hub HTTP error the line that names the cause: `pretrained.error_text`)."""
    from .pretrained import error_text
    return error_text(e)


def main(argv: Optional[List[str]] = None) -> int:
    import importlib
    import importlib.util
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv and argv[0] in ('--debug', '--version'):
        if argv.pop(0) == '--version':
            print(f'macrl-hub {version()}')
            return 0
        debug = True
    available = {k: v for k, v in _COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}
    if not argv or argv[0] in ('-h', '--help'):
        out = sys.stdout if argv else sys.stderr  # asked-for help is output; a bare `macrl` is a usage error
        print(_USAGE + '\n\ncommands:', file=out)
        for name, (mod, help_) in available.items():
            print(f'  {name:8s} {help_}', file=out)
        return 0 if argv else 2
    cmd = argv[0]
    if cmd not in available:
        print(f'macrl: unknown command {cmd!r}; choose from {", ".join(available)}', file=sys.stderr)
        return 2
    from .pretrained import PretrainedWeightsError
    module = importlib.import_module(_COMMANDS[cmd][0])
    sys.argv = [f'macrl {cmd}'] + argv[1:]
    try:
        module.main(argv[1:])
    except SystemExit as e:  # argparse: 2 on a usage error (it printed the usage line), 0 after -h
        if isinstance(e.code, str):  # a command's own message (e.g. macrl download's): print it, status 1
            print(e.code, file=sys.stderr)
            return 1
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f'macrl {cmd}: interrupted', file=sys.stderr)
        return 130
    except (ValueError, OSError, PretrainedWeightsError, FloatingPointError) as e:  # bad input: one clear line
        if debug:
            raise
        # ours, written to be read whole (where it looked, the ways out); a library's: its first line
        text = str(e).strip() if isinstance(e, PretrainedWeightsError) else _one_line(e)
        print(f'macrl {cmd}: error: {text}', file=sys.stderr)
        return 1
    except Exception as e:  # anything else is likely a bug: still one line, with the way to the traceback
        if debug:
            raise
        print(f'macrl {cmd}: error: {type(e).__name__}: {_one_line(e)} (rerun as `macrl --debug {cmd} ...` for the '
              'traceback)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
