"""torch.hub entry points for macrl-hub: one per MACRL architecture.

    model = torch.hub.load('macrl-hub/macrl-hub', 'macrl_vit_tiny_p4_cifar', pretrained=True)
    model = torch.hub.load('path/to/checkout', 'macrl_vit_tiny_p4_cifar', source='local', pretrained=True)

Weights in $MACRL_WEIGHTS_DIR (filled by `macrl download`), then inside the checkout
(model_cards/<arch>.<tag>/model.safetensors) are used before the Hub, so no Hugging Face access is needed
for published tags; `tag=` picks a non-default one (e.g. 'cifar10_lin').
"""
dependencies = ['torch', 'timm', 'safetensors', 'huggingface_hub']


def _create(arch: str, pretrained: bool = False, tag: str = None, num_classes: int = None, **kwargs):
    import timm
    import macrl_hub  # noqa: F401  (registers macrl_vit_*)
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    return timm.create_model(f'{arch}.{tag}' if tag else arch, pretrained=pretrained, **kwargs)


def macrl_vit_tiny_p4_cifar(pretrained: bool = False, tag: str = None, num_classes: int = None, **kwargs):
    """ViT-Tiny/4 (192-d, 12 layers, 3 heads) for 32x32 images, MACRL-pretrained on CIFAR-10 (tag 'cifar10').

    pretrained: load published weights; tag: which ('cifar10', 'cifar10_lin', ...); num_classes: new head
    size (0 = features only); kwargs go to timm.create_model.
    """
    return _create('macrl_vit_tiny_p4_cifar', pretrained, tag, num_classes, **kwargs)


def macrl_vit_small_p4_cifar(pretrained: bool = False, tag: str = None, num_classes: int = None, **kwargs):
    """ViT-Small/4 (384-d, 12 layers, 6 heads) for 32x32 images. Arguments as macrl_vit_tiny_p4_cifar."""
    return _create('macrl_vit_small_p4_cifar', pretrained, tag, num_classes, **kwargs)


def macrl_vit_medium_p4_cifar(pretrained: bool = False, tag: str = None, num_classes: int = None, **kwargs):
    """The paper's CIFAR encoder (512-d, 12 layers, 4 heads, patch 4). Arguments as macrl_vit_tiny_p4_cifar."""
    return _create('macrl_vit_medium_p4_cifar', pretrained, tag, num_classes, **kwargs)


def macrl_vit_medium_p8_64(pretrained: bool = False, tag: str = None, num_classes: int = None, **kwargs):
    """The paper's Tiny-ImageNet encoder (512-d, 12 layers, 64x64, patch 8). Arguments as above."""
    return _create('macrl_vit_medium_p8_64', pretrained, tag, num_classes, **kwargs)


def macrl_vit_medium_d4_p16_224(pretrained: bool = False, tag: str = None, num_classes: int = None, **kwargs):
    """The paper's Imagenette/Imagewoof encoder (512-d, 4 layers, 224x224, patch 16). Arguments as above."""
    return _create('macrl_vit_medium_d4_p16_224', pretrained, tag, num_classes, **kwargs)
