"""Shared fixtures: the CIFAR-10 archive from ../shared/data, and tiny models for fast tests."""
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CIFAR_ARCHIVE = Path(os.environ.get('MACRL_TEST_ARCHIVE', ROOT.parent / 'shared' / 'data' / 'cifar10-jpeg.tar.xz'))


def _need_archive() -> Path:
    if CIFAR_ARCHIVE.is_file():
        return CIFAR_ARCHIVE
    msg = f'CIFAR-10 archive not found at {CIFAR_ARCHIVE}'
    if os.environ.get('CI'):
        pytest.fail(msg + ' (CI must have ../shared/data)')
    pytest.skip(msg)


@pytest.fixture(scope='session')
def cifar_archive() -> Path:
    return _need_archive()


@pytest.fixture(scope='session')
def cifar_test(cifar_archive):
    """The 10,000 CIFAR-10 test images as uint8 tensors (decoded once per session)."""
    from macrl_hub.data import load_dataset
    return load_dataset(str(cifar_archive), 'test')


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def load_script(relpath: str):
    """A script of this checkout that is not part of the package (e.g. benchmarks/paper_table.py) as a module."""
    import importlib.util
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_encoder(**kw):
    """A 2-layer, 32-d MACRL ViT on 32x32 inputs: a real timm model, fast enough for unit tests."""
    import timm
    import macrl_hub  # noqa: F401
    args = dict(depth=2, embed_dim=32, num_heads=2)
    args.update(kw)
    return timm.create_model('macrl_vit_tiny_p4_cifar', **args)


def tiny_macrl(objective: str = 'macrl', **kw):
    from macrl_hub import MACRL
    args = dict(objective=objective, decoder_dim=32, proj_hidden_dim=64, proj_dim=16, bank_size=64)
    args.update(kw)
    return MACRL(tiny_encoder(), **args)
