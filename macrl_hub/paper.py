"""What the paper reports (Yao, Desai & Palaniswami, arXiv:2211.06012, Tables 1-4) and the protocol behind it, as
data: model cards set their own numbers beside these. Nothing here is measured by us.

Epochs are from the paper's text (sections 4.1, 4.2) and table captions: every method pretrained 2,000 epochs
(batch 2,048). CIFAR: MAE and MoCo fine-tuned 400 / linear-probed 1,000 epochs, MACRL 200 / 200, and `MACRL*` 100 /
100. ImageNet subsets: all three 400 / 1,000, `MACRL*` 200 / 500.
"""
from typing import Dict, NamedTuple, Optional

__all__ = ['PaperResult', 'PAPER_RESULTS', 'PAPER_ARCH', 'PAPER_DATASETS', 'PAPER_PRETRAIN_EPOCHS', 'PAPER_PROTOCOL',
           'paper_results', 'paper_tables']

PAPER_PRETRAIN_EPOCHS = 2000
PAPER_PROTOCOL = {
    'linear': 'AdamW, lr 0.1, weight decay 0, random-resized-crop + flip augmentation',
    'finetune': 'AdamW, lr 1.5e-3, weight decay 0.01, random-resized-crop + AutoAugment + CutOut',
}


class PaperResult(NamedTuple):
    method: str   # 'MAE', 'MoCo', 'MACRL*' (shorter evaluation), 'MACRL'
    top1: float   # test top-1, %
    epochs: int   # of the linear probe or fine-tune that gave top1


_CIFAR_EPOCHS = {'MAE': (400, 1000), 'MoCo': (400, 1000), 'MACRL*': (100, 100), 'MACRL': (200, 200)}
_SUBSET_EPOCHS = {'MAE': (400, 1000), 'MoCo': (400, 1000), 'MACRL*': (200, 500), 'MACRL': (400, 1000)}
_TOP1 = {  # dataset: {method: (fine-tune, linear probe)}, Tables 1+2 (CIFAR) and 3+4 (ImageNet subsets)
    'cifar10': {'MAE': (96.18, 78.60), 'MoCo': (95.61, 86.16), 'MACRL*': (96.43, 81.36), 'MACRL': (97.88, 91.02)},
    'cifar100': {'MAE': (81.68, 50.08), 'MoCo': (74.59, 57.71), 'MACRL*': (81.38, 48.62), 'MACRL': (82.94, 66.27)},
    'tinyimagenet': {'MAE': (70.56, 61.95), 'MoCo': (70.08, 75.25), 'MACRL*': (69.86, 54.45),
                     'MACRL': (72.06, 75.44)},
    'imagenette': {'MAE': (92.86, 74.26), 'MoCo': (92.26, 78.60), 'MACRL*': (92.89, 71.05), 'MACRL': (93.37, 80.56)},
    'imagewoof': {'MAE': (84.47, 44.74), 'MoCo': (83.28, 51.53), 'MACRL*': (81.21, 44.76), 'MACRL': (87.14, 54.98)},
}
# the encoder the paper trains on each dataset: 512-d, 4 heads; 12 layers with patch 4 (CIFAR) or 8 (Tiny-ImageNet),
# 4 layers with patch 16 on Imagenette / Imagewoof
PAPER_ARCH = {'cifar10': 'macrl_vit_medium_p4_cifar', 'cifar100': 'macrl_vit_medium_p4_cifar',
              'tinyimagenet': 'macrl_vit_medium_p8_64', 'imagenette': 'macrl_vit_medium_d4_p16_224',
              'imagewoof': 'macrl_vit_medium_d4_p16_224'}
PAPER_DATASETS = {'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100', 'tinyimagenet': 'Tiny-ImageNet',
                  'imagenette': 'Imagenette', 'imagewoof': 'Imagewoof'}
_CIFAR = {'cifar10', 'cifar100'}  # Tables 1-2; the ImageNet subsets are in Tables 3-4

PAPER_RESULTS: Dict[str, Dict[str, Dict[str, PaperResult]]] = {
    # dataset -> 'linear' | 'finetune' -> method -> PaperResult
    ds: {protocol: {m: PaperResult(m, top1[m][i], (_CIFAR_EPOCHS if ds in _CIFAR else _SUBSET_EPOCHS)[m][i])
                    for m in top1}
         for i, protocol in enumerate(('finetune', 'linear'))}
    for ds, top1 in _TOP1.items()}


def paper_results(dataset: str) -> Optional[Dict[str, Dict[str, PaperResult]]]:
    """{'linear': {method: PaperResult}, 'finetune': {...}} for a dataset the paper reports, else None."""
    return PAPER_RESULTS.get(dataset)


def paper_tables(dataset: str) -> str:
    """Which tables of the paper hold the dataset's numbers: 'Tables 1-2' or 'Tables 3-4'."""
    return 'Tables 1-2' if dataset in _CIFAR else 'Tables 3-4'
