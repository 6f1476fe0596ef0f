"""Every published tag loads offline with pretrained=True (sha256-checked) and works on real CIFAR-10."""
import pytest
import timm
import torch

import macrl_hub  # noqa: F401
from macrl_hub.evaluate import _top1
from macrl_hub.features import extract_features
from macrl_hub.knn import knn_accuracy
from macrl_hub.pretrained import PUBLISHED, list_published, local_weights_path, sha256_file
from macrl_hub.weights import load_safetensors

# Measured on this slice (`python tests/test_published.py` prints the values) minus a 3-point margin, in fp32.
# kNN: k=20, bank = 1,000 fixed train images, queries = 500 fixed test images (small enough for ViT-S/4 on 2 CPU
# cores in CI). Classifier tags (num_classes > 0): top-1 of the model's own head on the same 500 test images.
# Measured 2026-11-28 (fp32, 2-core Cascade Lake): the H200 runs of runs/gpu_h200 (small 52.8 epochs, tiny 26.5);
# a random init gives 24.8 (small) / 27.2 (tiny) on the same slice. FLOORS = MEASURED - 3.
MEASURED = {
    'macrl_vit_small_p4_cifar.cifar10': 57.6,
    'macrl_vit_small_p4_cifar.cifar10_lin': 73.4,
    'macrl_vit_tiny_p4_cifar.cifar10': 48.0,
    'macrl_vit_tiny_p4_cifar.cifar10_lin': 62.6,
}
FLOORS = {name: round(v - 3.0, 1) for name, v in MEASURED.items()}


@pytest.fixture(scope='module')
def cifar_train(cifar_archive):
    from macrl_hub.data import load_dataset
    return load_dataset(str(cifar_archive), 'train')


def _slice_metric(model, train, test):
    bank, queries = train.subset(1000, seed=11), test.subset(500, seed=12)
    if model.num_classes:
        return _top1(model, queries, torch.device('cpu'), 'fp32')
    fb = extract_features(model, bank.images, precision='fp32', progress=False)
    fq = extract_features(model, queries.images, precision='fp32', progress=False)
    return knn_accuracy(fb, bank.labels, fq, queries.labels, 10, ks=(20,))[20]


def test_every_published_tag_has_a_measured_floor():
    assert set(list_published()) == set(FLOORS)


@pytest.mark.parametrize('name', list_published())
def test_published_weights(name, cifar_train, cifar_test):
    path = local_weights_path(name)
    assert path.is_file(), f'{name} is published but {path} is missing'
    assert sha256_file(path) == PUBLISHED[name]
    model = timm.create_model(name, pretrained=True)
    stored = load_safetensors(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16 files still give an fp32 model
    assert all(torch.equal(model.state_dict()[k], v.to(model.state_dict()[k].dtype)) for k, v in stored.items())
    assert _slice_metric(model, cifar_train, cifar_test) >= FLOORS[name]


if __name__ == '__main__':
    from conftest import CIFAR_ARCHIVE
    from macrl_hub.data import load_dataset
    tr, te = load_dataset(str(CIFAR_ARCHIVE), 'train'), load_dataset(str(CIFAR_ARCHIVE), 'test')
    for n in list_published():
        print(n, round(_slice_metric(timm.create_model(n, pretrained=True), tr, te), 2))
    for arch in sorted({n.split('.')[0] for n in list_published()}):
        print(arch, 'random init', round(_slice_metric(timm.create_model(arch, num_classes=0), tr, te), 2))
