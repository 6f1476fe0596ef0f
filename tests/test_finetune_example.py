"""README's "Fine-tune in your own code" block runs as written (one epoch of one step on a small folder), and the
dataset API it is built on gives what timm's transforms take."""
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import macrl_hub  # noqa: F401
from macrl_hub.data import ImageDataset, load_dataset

README = Path(__file__).resolve().parent.parent / 'README.md'


def _example() -> str:
    text = README.read_text()
    section = text[text.index('### Fine-tune in your own code'):]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


@pytest.fixture(scope='module')
def folder(tmp_path_factory, cifar_test):
    """160 train / 60 test real CIFAR-10 images as <split>/<class>/*.png."""
    root = tmp_path_factory.mktemp('ft_folder')
    for split, idx in (('train', range(0, 10000, 62)[:160]), ('test', range(31, 10000, 166)[:60])):
        for i in idx:  # strided: the archive is sorted by class
            c = cifar_test.classes[int(cifar_test.labels[i])]
            (root / split / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(cifar_test.images[i].permute(1, 2, 0).numpy()).save(root / split / c / f'{i}.png')
    return root


def test_image_dataset_items_are_what_timm_transforms_take(folder, cifar_test):
    raw = ImageDataset(str(folder), 'test')
    img, label = raw[0]
    assert isinstance(img, Image.Image) and img.mode == 'RGB' and img.size == (32, 32) and isinstance(label, int)
    assert raw.classes == cifar_test.classes and raw.class_to_idx['truck'] == 9 and len(raw) == 60
    tensors = load_dataset(str(folder), 'test')
    assert torch.equal(torch.from_numpy(np.array(img)).permute(2, 0, 1), tensors.images[0])
    assert raw.targets == tensors.labels.tolist()
    model = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1)
    tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    x, y = ImageDataset(tensors, transform=tf, target_transform=lambda t: t + 100)[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == tensors.labels[5].item() + 100


def test_readme_finetune_example_runs(folder, capsys):
    code = _example()
    assert "DATA, EPOCHS = 'cifar10', 100" in code
    code = code.replace("DATA, EPOCHS = 'cifar10', 100", f"DATA, EPOCHS = {str(folder)!r}, 1")
    code = code.replace('num_workers=2', 'num_workers=0')  # one step: no worker processes
    ref = timm.create_model('macrl_vit_small_p4_cifar', pretrained=True).state_dict()
    ns = {}
    exec(compile(code, str(README), 'exec'), ns)
    assert re.search(r'fine-tuned top-1: \d+\.\d\d%', capsys.readouterr().out)
    model, opt = ns['model'], ns['opt']
    assert model.head.out_features == 10 and len(ns['loader']) == 1
    # the pretrained encoder was loaded and then trained: equal before the step would mean no weights or no step
    assert not torch.equal(model.blocks[0].attn.qkv.weight, ref['blocks.0.attn.qkv.weight'])
    assert torch.allclose(model.blocks[0].attn.qkv.weight, ref['blocks.0.attn.qkv.weight'], atol=0.05)
    # layer decay reached the optimizer and the scheduler: one lr per block depth, rising towards the head
    lrs = sorted({round(g['lr'], 12) for g in opt.param_groups if g['lr'] > 0})
    assert len(lrs) >= 13, f'layer decay not applied: group lrs {lrs}'
    assert max(g['lr'] for g in opt.param_groups) / min(g['lr'] for g in opt.param_groups) == pytest.approx(
        0.75 ** -13, rel=1e-6)
