"""macrl-hub: Masked Contrastive Representation Learning (MACRL) as a timm plugin.

`import macrl_hub` registers the `macrl_vit_*` architectures and their pretrained tags in timm.
"""
from . import models  # noqa: F401  (registers macrl_vit_* in timm)
from .macrl import MACRL, OBJECTIVES
from .models import MACRL_ARCHS, architecture_args
from .pretrained import PUBLISHED, list_published

__version__ = '0.1.0'
__all__ = ['MACRL', 'OBJECTIVES', 'MACRL_ARCHS', 'architecture_args', 'PUBLISHED', 'list_published']
