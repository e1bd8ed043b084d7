"""Model definitions: backbones, heads and the registered MultiTaskVIF assemblies."""
from .backbones import create_backbone, list_backbones
from .heads import create_head, list_heads
from .multitaskvif import MSRS_CLASSES, MTH_CFGS, VARIANTS, MultiTaskVIF

__all__ = ['create_backbone', 'list_backbones', 'create_head', 'list_heads', 'MSRS_CLASSES', 'MTH_CFGS', 'VARIANTS',
           'MultiTaskVIF']
