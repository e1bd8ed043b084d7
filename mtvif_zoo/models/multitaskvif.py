"""MultiTaskVIF assembly: backbone x head, and the timm registrations of every named model.

``MultiTaskVIF`` = a fusion backbone (``mtvif_zoo.models.backbones``) whose decoder is replaced by
a head (``mtvif_zoo.models.heads``): the Multi-Task Head of Sec. 3.3 for the paper's variants
I-IV (Table 7), or the backbone's original decoder (``cnn``) for the baselines.

Named models (timm ``@register_model``; ``mtvif_zoo.list_models()``):

=============  ===========  =========  ===========================================
name           backbone     head       what
=============  ===========  =========  ===========================================
mtvif_i        swinfusion   mth        MultiTaskVIF I  (Table 7: 2.47 M, 125.26 G)
mtvif_ii       ufuser       mth        MultiTaskVIF II (2.13 M, 49.08 G)
mtvif_iii      seafusion    mth        MultiTaskVIF III (0.93 M, 60.84 G)
mtvif_iv       segmif       mth        MultiTaskVIF IV (1.28 M, 83.83 G)
swinfusion     swinfusion   cnn        original SwinFusion (Tang et al. 2022)
emma_ufuser    ufuser       cnn        original EMMA Ufuser (Zhao et al. 2024)
seafusion      seafusion    cnn        original SeAFusion (Tang et al. 2022)
segmif         segmif       cnn        SegMiF, segmentation-free layout (Liu et al. 2023)
=============  ===========  =========  ===========================================

Every part is a keyword: ``create_model('mtvif_iv', head='mth_nohia', in_chans=1)``,
``create_model('mtvif_iii', backbone='segmif')``, ``create_model('seafusion', in_chans=1)``
(the original 1-channel SeAFusion), ``create_model('mtvif_ii', num_classes=15)``.

MTH sizing (Table 7 fidelity; the paper gives only the totals). Table 7 is measured on the whole
multi-task model during training at 256x256, 3-channel. Every MTH layer runs at full resolution,
so each MTH parameter costs ~65.5 k MACs at 256x256; the widths in :data:`MTH_CFGS` were found by
``benchmarks/size_mth.py`` so that backbone + MTH land within 1 % of both the parameter count and
the MACs of each variant (``tests/test_profile.py`` checks the 10 % band; ``mtvif profile NAME``
prints both). Variant I is the exception that needs a design decision: the released SwinFusion
backbone has 0.82 M parameters but costs 63.9 GMACs, so a full-resolution MTH cannot give both
+1.65 M parameters and only +61 GMACs; its segmentation branch therefore starts with a stride-2
conv (half resolution, logits and ``f_seg`` upsampled bilinearly), the fusion branch stays at full
resolution.
"""
import copy
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .backbones import create_backbone, get_backbone_cls, list_backbones
from .heads import get_head_cls, list_heads
from ..hub import registry as _registry

__all__ = ['MultiTaskVIF', 'MTH_CFGS', 'VARIANTS', 'MSRS_CLASSES']

#: the 9 MSRS / MFNet classes (MFNet: Ha et al., IROS 2017), index = class id
MSRS_CLASSES = ('unlabelled', 'car', 'person', 'bike', 'curve', 'car_stop', 'guardrail', 'color_cone', 'bump')

#: per-variant Multi-Task Head widths, chosen to match Table 7 (see module docstring)
MTH_CFGS: Dict[str, Dict[str, Any]] = {
    # Table 7 target minus backbone, at 256x256: I 2.47 M / 125.26 G, II 2.13 M / 49.08 G,
    # III 0.93 M / 60.84 G, IV 1.28 M / 83.83 G (search: benchmarks/size_mth.py). Variant I needs
    # 1.65 M head parameters but only 61 G head MACs: its segmentation branch runs at 1/2 resolution.
    'swinfusion': dict(fusion_chs=(192, 144), fusion_tail_chs=(64, 32), seg_chs=(288,), seg_stride=2),  # 1.63 M
    'ufuser': dict(fusion_chs=(176, 96), fusion_tail_chs=(64, 32), seg_chs=(160,)),  # MTH 0.63 M
    'seafusion': dict(fusion_chs=(160, 96), fusion_tail_chs=(64, 32), seg_chs=(160,)),  # MTH 0.84 M
    'segmif': dict(fusion_chs=(160, 48), fusion_tail_chs=(64, 32), seg_chs=(80,)),  # MTH 0.48 M
}

#: name -> (backbone, head, Table 7 (params, GMACs) or None)
VARIANTS: Dict[str, Tuple[str, str, Optional[Tuple[float, float]]]] = {
    'mtvif_i': ('swinfusion', 'mth', (2.47e6, 125.26e9)),
    'mtvif_ii': ('ufuser', 'mth', (2.13e6, 49.08e9)),
    'mtvif_iii': ('seafusion', 'mth', (0.93e6, 60.84e9)),
    'mtvif_iv': ('segmif', 'mth', (1.28e6, 83.83e9)),
    'swinfusion': ('swinfusion', 'cnn', None),
    'emma_ufuser': ('ufuser', 'cnn', None),
    'seafusion': ('seafusion', 'cnn', None),
    'segmif': ('segmif', 'cnn', None),
}


class MultiTaskVIF(nn.Module):
    """A fusion backbone with a head: MultiTaskVIF (``head='mth'``) or the original network (``'cnn'``).

    Forward contract (Sec. 3.3):

    * training mode: ``forward(vis, ir) -> (fused, seg_logits)``; ``seg_logits`` is ``None`` for
      heads without a segmentation branch;
    * eval mode: ``forward(vis, ir) -> fused``; the segmentation classifier is not computed;
    * :meth:`segment` returns the logits in either mode; :meth:`fuse` is the user-facing API
      (any input kind, padding, batching, autocast); :meth:`fusion_only` is the deployable copy.

    Inputs are ``B x in_chans x H x W`` in [0, 1] (``in_chans`` per modality; IR replicated to 3
    channels in the 3-channel mode); H and W must be multiples of ``pad_multiple``.
    """

    def __init__(self, backbone: str = 'seafusion', head: str = 'mth', in_chans: int = 3, num_classes: int = 9,
                 backbone_args: Optional[Dict[str, Any]] = None, head_args: Optional[Dict[str, Any]] = None):
        super().__init__()
        get_backbone_cls(backbone)  # validates the name, error lists the choices
        head_cls = get_head_cls(head)
        self.backbone = create_backbone(backbone, in_chans=in_chans, **(backbone_args or {}))
        self.head = head_cls(in_chs=self.backbone.num_features, out_chans=in_chans, num_classes=num_classes,
                             backbone_cls=type(self.backbone), **(head_args or {}))
        self.backbone_name = backbone
        self.head_name = head
        self.in_chans = in_chans
        self.num_classes = self.head.num_classes
        self.num_features = self.backbone.num_features
        self.pad_multiple = int(self.backbone.pad_multiple)

    @property
    def has_segmentation(self) -> bool:
        return bool(self.head.has_segmentation)

    def forward_features(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return self.backbone(vis, ir)

    def forward_head(self, x: torch.Tensor, with_seg: bool = False):
        if with_seg and not self.has_segmentation:
            raise ValueError(f'{self.head_name!r} head of this model has no segmentation classifier '
                             '(a cnn baseline or a fusion_only() copy)')
        return self.head(x, with_seg=with_seg)

    def forward(self, vis: torch.Tensor, ir: torch.Tensor):
        if vis.shape != ir.shape:
            raise ValueError(f'vis and ir must have the same shape, got {tuple(vis.shape)} and {tuple(ir.shape)}')
        if self.training:
            return self.forward_head(self.forward_features(vis, ir), with_seg=self.has_segmentation)
        return self.forward_head(self.forward_features(vis, ir), with_seg=False)[0]

    def segment(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        """Segmentation logits ``B x num_classes x H x W`` (the training-time branch, any mode)."""
        return self.forward_head(self.forward_features(vis, ir), with_seg=True)[1]

    def fuse(self, vis, ir, **kwargs):
        """See :func:`mtvif_zoo.fuse`; ``model.fuse(vis, ir)`` == ``mtvif_zoo.fuse(vis, ir, model=model)``."""
        from ..fusion import fuse
        return fuse(vis, ir, model=self, **kwargs)

    def fusion_only(self) -> 'MultiTaskVIF':
        """Deployable copy: no segmentation classifier, eval mode, same fused output bit for bit."""
        model = copy.deepcopy(self)
        model.head = self.head.fusion_only()
        model.num_classes = 0
        return model.eval()


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 9, 'input_size': (3, 256, 256), 'fixed_input_size': False,
        'mean': (0., 0., 0.), 'std': (1., 1., 1.), 'crop_pct': 1.0, 'interpolation': 'bilinear',
        'first_conv': None, 'classifier': 'head.seg_classifier.1', 'label_names': MSRS_CLASSES,
        'license': 'apache-2.0', 'paper_name': 'MultiTaskVIF: Segmentation-oriented visible and infrared '
        'image fusion via multi-task learning', 'paper_ids': 'arXiv:2505.06665', **kwargs,
    }


def _baseline_cfg(**kwargs) -> Dict[str, Any]:
    return _cfg(num_classes=0, classifier=None, label_names=None, **kwargs)


#: weightless cfg of every architecture; published weights add ``arch.tag`` cfgs from the registry
_BASE_CFGS: Dict[str, Dict[str, Any]] = {
    'mtvif_i': _cfg(),
    'mtvif_ii': _cfg(),
    'mtvif_iii': _cfg(),
    'mtvif_iv': _cfg(),
    'swinfusion': _baseline_cfg(paper_name='SwinFusion: Cross-domain long-range learning for general image '
                                'fusion via Swin transformer', paper_ids='doi:10.1109/JAS.2022.105686'),
    'emma_ufuser': _baseline_cfg(paper_name='Equivariant multi-modality image fusion', paper_ids='arXiv:2305.11443'),
    'seafusion': _baseline_cfg(paper_name='Image fusion in the loop of high-level vision tasks: a semantic-aware '
                               'real-time infrared and visible image fusion network',
                               paper_ids='doi:10.1016/j.inffus.2021.12.004'),
    'segmif': _baseline_cfg(paper_name='Multi-interactive feature learning and a full-time multi-modality '
                            'benchmark for image fusion and segmentation', paper_ids='arXiv:2308.02097'),
}

# pretrained ``arch.tag`` cfgs (hf_hub_id@revision, url, sha256, ...) come from mtvif_zoo/hub/registry.json
default_cfgs = generate_default_cfgs(_registry.timm_cfgs(_BASE_CFGS))

_MODEL_KWARGS = ('backbone', 'head', 'in_chans', 'num_classes', 'backbone_args', 'head_args')
# keyword arguments timm's create_model / build_model_with_cfg handle themselves
_TIMM_KWARGS = ('pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir', 'checkpoint_path', 'pretrained_strict',
                'pretrained_filter_fn', 'kwargs_filter', 'features_only', 'out_indices', 'feature_cls',
                'pretrained_model_args')


def _create_mtvif(variant: str, pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    unknown = sorted(set(kwargs) - set(_MODEL_KWARGS) - set(_TIMM_KWARGS))
    if unknown:
        raise TypeError(f'{variant}: unknown keyword argument(s) {unknown}; valid: {", ".join(_MODEL_KWARGS)}')
    from ..hub import pretrained as _pretrained  # the hub imports this module: import lazily
    num_classes_asked = kwargs.get('num_classes')
    if num_classes_asked == (kwargs.get('pretrained_model_args') or {}).get('num_classes'):
        num_classes_asked = None  # set by timm from an hf-hub:/local-dir: config.json, not by the caller
    cache_dir = kwargs.get('cache_dir')
    kwargs = _pretrained.weight_model_args(variant, pretrained, kwargs)  # arch.tag -> its model_args
    backbone, head, _ = VARIANTS[variant]
    backbone = kwargs.pop('backbone', None) or backbone
    head = kwargs.pop('head', None) or head
    if backbone not in list_backbones():
        raise ValueError(f'unknown backbone {backbone!r}; valid backbones: {", ".join(list_backbones())}')
    if head not in list_heads():
        raise ValueError(f'unknown head {head!r}; valid heads: {", ".join(list_heads())}')
    if kwargs.get('head_args') is None and head.startswith('mth'):
        kwargs['head_args'] = dict(MTH_CFGS[VARIANTS[variant][0]])
    if head.startswith('mth'):  # baselines' cfgs say num_classes=0; an MTH on them defaults to the 9 MSRS classes
        kwargs.setdefault('num_classes', len(MSRS_CLASSES))
    # timm never loads weights itself here: mtvif_zoo.hub.pretrained resolves the source (explicit >
    # shipped > Hub > URL), checks the sha256 and reads safetensors only (never pickle)
    model = build_model_with_cfg(MultiTaskVIF, variant, False, backbone=backbone, head=head,
                                 pretrained_strict=True, **kwargs)
    if pretrained:
        model = _pretrained.load_pretrained(model, cache_dir=cache_dir, num_classes=num_classes_asked)
    return model


@register_model
def mtvif_i(pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    """MultiTaskVIF I: SwinFusion backbone + Multi-Task Head (Table 7: 2.47 M params, 125.26 GMACs)."""
    return _create_mtvif('mtvif_i', pretrained, **kwargs)


@register_model
def mtvif_ii(pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    """MultiTaskVIF II: EMMA Ufuser backbone + Multi-Task Head (Table 7: 2.13 M, 49.08 GMACs)."""
    return _create_mtvif('mtvif_ii', pretrained, **kwargs)


@register_model
def mtvif_iii(pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    """MultiTaskVIF III: SeAFusion backbone + Multi-Task Head (Table 7: 0.93 M, 60.84 GMACs)."""
    return _create_mtvif('mtvif_iii', pretrained, **kwargs)


@register_model
def mtvif_iv(pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    """MultiTaskVIF IV: SegMiF backbone + Multi-Task Head (Table 7: 1.28 M, 83.83 GMACs)."""
    return _create_mtvif('mtvif_iv', pretrained, **kwargs)


@register_model
def swinfusion(pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    """Original SwinFusion (backbone + its RSTB/conv decoder), no segmentation branch."""
    return _create_mtvif('swinfusion', pretrained, **kwargs)


@register_model
def emma_ufuser(pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    """Original EMMA Ufuser (U-net fusion network), no segmentation branch."""
    return _create_mtvif('emma_ufuser', pretrained, **kwargs)


@register_model
def seafusion(pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    """Original SeAFusion fusion network (GRDB encoder + conv decoder), no segmentation branch."""
    return _create_mtvif('seafusion', pretrained, **kwargs)


@register_model
def segmif(pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    """SegMiF fusion network, segmentation-free layout (``Fusion_Network_rmseg``)."""
    return _create_mtvif('segmif', pretrained, **kwargs)
