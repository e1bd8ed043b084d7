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
import math
import re
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models._features import FeatureGetterNet, feature_take_indices

from . import _weights
from .backbones import create_backbone, get_backbone_cls, list_backbones
from .heads import get_head_cls, list_heads

__all__ = ['MultiTaskVIF', 'MTH_CFGS', 'VARIANTS', 'MSRS_CLASSES', 'MAX_CLASSES', 'MAX_INT_ARG', 'check_model_args']

#: the largest segmentation class count a model may be built with (MSRS has 9 classes, FMB 15); a
#: 10-million-class classifier would be allocated before anything else fails and OOM-kill the process
MAX_CLASSES = 1000
#: the largest integer (a width, depth, window size ...) inside ``backbone_args`` / ``head_args``
MAX_INT_ARG = 4096
#: arguments MultiTaskVIF passes to the backbone / head itself
_INTERNAL_ARGS = {'self', 'in_chs', 'in_chans', 'out_chans', 'num_classes', 'backbone_cls', 'drop_rate'}

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
      a model without a segmentation classifier (``num_classes=0``);
    * eval mode: ``forward(vis, ir) -> fused``; the segmentation classifier is not computed;
    * :meth:`segment` returns the logits in either mode; :meth:`fuse` is the user-facing API
      (any input kind, padding, batching, autocast); :meth:`fusion_only` is the deployable copy.

    timm semantics of the classifier: ``num_classes`` counts the segmentation classes and ``0``
    means no segmentation classifier (the fusion-only model, like timm's headless models);
    :meth:`get_classifier` / :meth:`reset_classifier` act on the segmentation classifier. The
    model is dense (per-pixel): ``global_pool`` may only be ``''`` / ``None`` (no pooling);
    ``drop_rate`` is dropout in front of the classifier's last 1x1 conv (training only).

    Inputs are ``B x in_chans x H x W`` in [0, 1] (``in_chans`` per modality; IR replicated to 3
    channels in the 3-channel mode); H and W must be multiples of ``pad_multiple``.
    """

    def __init__(self, backbone: str = 'seafusion', head: str = 'mth', in_chans: int = 3, num_classes: int = 9,
                 backbone_args: Optional[Dict[str, Any]] = None, head_args: Optional[Dict[str, Any]] = None,
                 drop_rate: float = 0., global_pool: Optional[str] = ''):
        super().__init__()
        if global_pool not in ('', None):
            raise ValueError(f'global_pool={global_pool!r}: the model predicts per pixel and has no global pooling; '
                             "use global_pool='' (or leave it out)")
        get_backbone_cls(backbone)  # validates the name, error lists the choices
        head_cls = get_head_cls(head)
        self.backbone = create_backbone(backbone, in_chans=in_chans, **(backbone_args or {}))
        self.head = head_cls(in_chs=self.backbone.num_features, out_chans=in_chans, num_classes=num_classes,
                             backbone_cls=type(self.backbone), drop_rate=drop_rate, **(head_args or {}))
        self.backbone_name = backbone
        self.head_name = head
        self.in_chans = in_chans
        self.num_classes = self.head.num_classes
        self.num_features = self.backbone.num_features
        self.head_hidden_size = self.head.head_hidden_size
        self.drop_rate = drop_rate
        self.pad_multiple = int(self.backbone.pad_multiple)
        self.feature_info = [dict(info, module=f'backbone.{info["module"]}') for info in self.backbone.feature_info]
        # timm reads ``_traits['first_conv']`` before the cfg's: the stems of *this* backbone
        self._traits = dict(first_conv=tuple(f'backbone.{n}' for n in self.backbone.first_conv))

    @property
    def has_segmentation(self) -> bool:
        return bool(self.head.has_segmentation)

    @property
    def output_convs(self) -> Tuple[str, ...]:
        """The conv(s) that write the fused image (``in_chans`` channels)."""
        if hasattr(self.head, 'decoder'):
            return (f'head.decoder.{self.head.decoder.out_conv}',)
        return ('head.fusion_out',)

    # -- timm model API ---------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.head.get_classifier()

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A fresh segmentation classifier for ``num_classes`` (``0``: none, the fusion-only model)."""
        if global_pool not in ('', None):
            raise ValueError(f'global_pool={global_pool!r}: the model has no global pooling')
        self.head.reset_classifier(num_classes)
        self.num_classes = self.head.num_classes

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the backbone's blocks (Swin blocks, RGBD / DRDB / Restormer-CNN
        blocks) in training; ``benchmarks/bench_grad_checkpointing.py`` measures the memory saved."""
        self.backbone.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise lr decay: stem convs, backbone modules, then the head."""
        stems = '|'.join(re.escape(n) for n in self._traits['first_conv'])
        names = [n for n, m in self.backbone.named_children() if any(True for _ in m.parameters())]
        blocks = [(rf'^backbone\.{re.escape(n)}\.', (i,)) for i, n in enumerate(names)]
        return dict(stem=rf'^(?:{stems})\.', blocks=blocks + [(r'^head\.', (99999,))])

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Swin relative-position bias tables (as timm's Swin models)."""
        return {n for n, _ in self.named_parameters() if n.endswith('relative_position_bias_table')}

    def forward_intermediates(self, vis: torch.Tensor, ir: torch.Tensor, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW', intermediates_only: bool = False):
        """The backbone's fused feature maps (``feature_info``); ``indices`` as in timm (``None``:
        all, ``int``: the last n, sequence: those). Returns the list, or ``(final, list)`` where
        ``final`` is :meth:`forward_features`' output."""
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        final, feats = self.backbone.forward_intermediates(vis, ir)
        take, _ = feature_take_indices(len(feats), indices)
        out = [feats[i] for i in take]
        return out if intermediates_only else (final, out)

    def prune_intermediate_layers(self, indices=None, prune_norm: bool = False, prune_head: bool = True):
        """For ``features_only``: the head is not needed (dropped); returns the absolute indices."""
        take, _ = feature_take_indices(len(self.feature_info), indices)
        if prune_head:
            self.head = nn.Identity()
            self.num_classes = 0
        return take

    # -- forward ----------------------------------------------------------------------------
    def forward_features(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return self.backbone(vis, ir)

    def forward_head(self, x: torch.Tensor, with_seg: bool = False, pre_logits: bool = False):
        """``(fused, seg_logits or None)``; ``pre_logits=True``: the features the segmentation
        classifier's last 1x1 conv reads (``head_hidden_size`` channels) instead of the fused pair."""
        if pre_logits:
            return self.head(x, pre_logits=True)[1]
        if with_seg and not self.has_segmentation:
            raise ValueError(f'{self.head_name!r} head of this model has no segmentation classifier '
                             '(num_classes=0: a fusion-only model or a cnn baseline)')
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

    #: ``mtvif_zoo.fuse``, installed by ``mtvif_zoo/__init__.py`` (the models import nothing from ``fusion``)
    _fuse_fn: Optional[Callable] = None

    def fuse(self, vis, ir, **kwargs):
        """See :func:`mtvif_zoo.fuse`; ``model.fuse(vis, ir)`` == ``mtvif_zoo.fuse(vis, ir, model=model)``."""
        if MultiTaskVIF._fuse_fn is None:
            raise RuntimeError('model.fuse needs mtvif_zoo.fusion: import mtvif_zoo')
        return MultiTaskVIF._fuse_fn(vis, ir, model=self, **kwargs)

    def fusion_only(self) -> 'MultiTaskVIF':
        """Deployable copy: no segmentation classifier, eval mode, same fused output bit for bit."""
        model = copy.deepcopy(self)
        model.reset_classifier(0)
        return model.eval()


class FusionFeatures(FeatureGetterNet):
    """``features_only=True`` wrapper: ``forward(vis, ir)`` -> the backbone's fused feature maps
    (timm's ``FeatureGetterNet``, with the model's two inputs)."""

    def forward(self, vis: torch.Tensor, ir: Optional[torch.Tensor] = None):
        if ir is None:
            raise TypeError('a fusion model takes two inputs: forward(vis, ir)')
        return self.model.forward_intermediates(vis, ir, indices=self.out_indices, norm=self.norm,
                                                output_fmt=self.output_fmt, intermediates_only=True)


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as mtvif_zoo.color.rgb_to_ycbcr


def _adapt_in_chans(state: Dict[str, torch.Tensor], model: MultiTaskVIF) -> Dict[str, torch.Tensor]:
    """3-channel weights into a 1-channel (Y-channel mode) model, the parts timm's
    ``adapt_input_conv`` does not cover: the output conv(s) become the BT.601 luma of the RGB
    output convs (exact before the output activation), and SwinFusion's RGB mean, subtracted from
    3-channel inputs, is folded into the stem bias (exact away from the zero-padded border) and its
    luma added to a 1-channel SwinFusion decoder's output bias. The stems themselves are summed over
    their input channels by timm (exact for a grey input replicated to 3 channels)."""
    if model.in_chans != 1:
        return state
    luma = torch.tensor(_LUMA)
    own = model.state_dict()
    stem_mean = getattr(model.backbone, 'input_mean', None)
    if stem_mean is not None:
        for name in model._traits['first_conv']:
            w, b = state.get(f'{name}.weight'), state.get(f'{name}.bias')
            if w is not None and b is not None and w.shape[1] == 3:
                mean = torch.tensor(stem_mean, dtype=torch.float32).view(1, 3, 1, 1)
                state[f'{name}.bias'] = (b.float() - (w.float() * mean).sum((1, 2, 3))).to(b.dtype)
    for name in model.output_convs:
        w, b = state.get(f'{name}.weight'), state.get(f'{name}.bias')
        if w is None or w.shape[0] != 3 or own[f'{name}.weight'].shape[0] != 1:
            continue
        state[f'{name}.weight'] = (w.float() * luma.view(3, 1, 1, 1)).sum(0, keepdim=True).to(w.dtype)
        if b is not None:
            bias = (b.float() * luma).sum().view(1)
            out_mean = getattr(getattr(model.head, 'decoder', None), 'output_mean', None)
            if out_mean is not None:
                bias = bias + (torch.tensor(out_mean) * luma).sum()
            state[f'{name}.bias'] = bias.to(b.dtype)
    return state


def _classifier_keys(model: MultiTaskVIF) -> set:
    """State-dict keys a fusion-only copy (``num_classes=0``) does not have."""
    head = copy.deepcopy(model.head)
    head.reset_classifier(0)
    kept = {f'head.{k}' for k in head.state_dict()}
    return {k for k in model.state_dict() if k.startswith('head.') and k not in kept}


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: MultiTaskVIF,
                         pretrained_num_classes: Optional[int] = None,
                         full_state: Optional[Callable[[], Dict[str, torch.Tensor]]] = None,
                         source_file: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn`` of the zoo's models (runs before timm's classifier / input-conv
    handling in ``load_pretrained``):

    * ``num_classes=0``: the segmentation classifier's keys of a full file are dropped;
    * the pretrained number of classes and a fusion-only file (``model.safetensors``): the trained
      classifier is taken from the full copy (``full_state()``, e.g. ``model_full.safetensors``),
      so config, metadata and state agree; without one, a clear error says to pass ``num_classes=0``
      (fusion-only) or ``num_classes=N`` (fresh classifier); another ``num_classes``: the layers
      before the last classifier conv come from the full copy when there is one;
    * ``in_chans=1`` from 3-channel weights: see :func:`_adapt_in_chans`;
    * anything else missing or unexpected raises a :class:`ValueError` naming the keys (timm loads
      non-strictly once the classifier is adapted).

    ``source_file``: the file the weights came from (the zoo's resolver passes it), named in every
    error so that a user with several weight files knows which one to replace.
    """
    weights = f'pretrained weights {source_file!r}' if source_file else 'pretrained weights'
    state = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state_dict.items()}
    own = model.state_dict()
    seg_keys = _classifier_keys(model)
    if model.num_classes == 0:
        state = {k: v for k, v in state.items() if k in own or not k.startswith('head.seg_')}
    missing_seg = sorted(k for k in seg_keys if k not in state)
    same_classes = pretrained_num_classes is not None and model.num_classes == pretrained_num_classes
    full = full_state() if (missing_seg and model.num_classes and full_state is not None) else None
    if full is not None and not same_classes:  # the trained layers before the (fresh) last classifier conv
        state.update({k: full[k] for k in missing_seg if k in full and full[k].shape == own[k].shape})
    elif missing_seg and same_classes:
        if full is None or any(k not in full for k in missing_seg):
            raise ValueError(
                f'{weights} are fusion-only (no {", ".join(missing_seg[:3])}, ...) and no full multi-task copy was '
                f'found: pass num_classes=0 for the fusion-only model, or num_classes=N for a fresh '
                f'{model.num_classes}-class classifier')
        state.update({k: full[k] for k in missing_seg})
    state = _adapt_in_chans(state, model)
    allowed_missing = set() if same_classes else seg_keys
    missing = sorted(set(own) - set(state) - allowed_missing)
    unexpected = sorted(k for k in set(state) - set(own) if not (k.startswith('head.seg_') and not same_classes))
    if missing or unexpected:
        raise ValueError(f'{weights} do not match {type(model).__name__}({model.backbone_name!r}, '
                         f'{model.head_name!r}, in_chans={model.in_chans}, num_classes={model.num_classes}): '
                         f'missing {missing[:10]}, unexpected {unexpected[:10]}')
    dtypes = lossy_dtypes(own, state)
    if dtypes:  # load_state_dict would cast them (int / bool / complex into float: truncated values)
        raise ValueError(f'{weights} have tensors of the wrong dtype (weights must be floating point): '
                         f'{", ".join(dtypes[:10])}{f" ... ({len(dtypes)} in all)" if len(dtypes) > 10 else ""}')
    return state


def lossy_dtypes(own: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor]) -> list:
    """``'key: dtype int32 (model float32)'`` for every tensor of ``state`` whose dtype would be cast
    lossily into the model's ``own`` state: a floating parameter / buffer must come as a floating
    tensor (int / bool / complex would load truncated), an integer buffer (BatchNorm
    ``num_batches_tracked``) as an integer one (issue 18, case 4)."""
    name = lambda d: str(d).replace('torch.', '')  # noqa: E731
    out = []
    for k in sorted(set(own) & set(state)):
        got, want = state[k].dtype, own[k].dtype
        if want.is_floating_point:
            ok = got.is_floating_point
        elif want == torch.bool or want.is_complex:
            ok = got == want
        else:  # integer buffers
            ok = not (got.is_floating_point or got.is_complex or got == torch.bool)
        if not ok:
            out.append(f'{k}: dtype {name(got)} (model {name(want)})')
    return out


def _cfg(backbone: str, **kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 9, 'input_size': (3, 256, 256), 'fixed_input_size': False,
        'pool_size': (256, 256),  # unpooled: the fused feature map is at the input resolution
        'mean': (0., 0., 0.), 'std': (1., 1., 1.), 'crop_pct': 1.0, 'interpolation': 'bilinear',
        'first_conv': tuple(f'backbone.{n}' for n in get_backbone_cls(backbone).first_conv),
        'classifier': 'head.seg_classifier.1', 'label_names': MSRS_CLASSES,
        'license': 'apache-2.0', 'paper_name': 'MultiTaskVIF: Segmentation-oriented visible and infrared '
        'image fusion via multi-task learning', 'paper_ids': 'arXiv:2505.06665', **kwargs,
    }


def _baseline_cfg(backbone: str, **kwargs) -> Dict[str, Any]:
    # num_classes=N on a baseline adds a 1x1 classifier ``head.seg_classifier`` (CNNHead)
    return _cfg(backbone, num_classes=0, classifier='head.seg_classifier', label_names=None, **kwargs)


#: weightless cfg of every architecture; published weights add ``arch.tag`` cfgs from the registry
_BASE_CFGS: Dict[str, Dict[str, Any]] = {
    'mtvif_i': _cfg('swinfusion'),
    'mtvif_ii': _cfg('ufuser'),
    'mtvif_iii': _cfg('seafusion'),
    'mtvif_iv': _cfg('segmif'),
    'swinfusion': _baseline_cfg('swinfusion', paper_name='SwinFusion: Cross-domain long-range learning for general '
                                'image fusion via Swin transformer', paper_ids='doi:10.1109/JAS.2022.105686'),
    'emma_ufuser': _baseline_cfg('ufuser', paper_name='Equivariant multi-modality image fusion',
                                 paper_ids='arXiv:2305.11443'),
    'seafusion': _baseline_cfg('seafusion', paper_name='Image fusion in the loop of high-level vision tasks: a '
                               'semantic-aware real-time infrared and visible image fusion network',
                               paper_ids='doi:10.1016/j.inffus.2021.12.004'),
    'segmif': _baseline_cfg('segmif', paper_name='Multi-interactive feature learning and a full-time '
                            'multi-modality benchmark for image fusion and segmentation', paper_ids='arXiv:2308.02097'),
}

# pretrained ``arch.tag`` cfgs (hf_hub_id@revision, url, sha256, ...) come from mtvif_zoo/hub/registry.json
default_cfgs = generate_default_cfgs(_weights.timm_cfgs(_BASE_CFGS, _weights.read_entries()))

_MODEL_KWARGS = ('backbone', 'head', 'in_chans', 'num_classes', 'backbone_args', 'head_args', 'drop_rate',
                 'global_pool')
# keyword arguments timm's create_model / build_model_with_cfg handle themselves
_TIMM_KWARGS = ('pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir', 'checkpoint_path', 'pretrained_strict',
                'pretrained_filter_fn', 'kwargs_filter', 'features_only', 'out_indices', 'feature_cls',
                'pretrained_model_args')

def _accepted_args(cls) -> Optional[set]:
    """Keyword arguments ``cls(...)`` accepts (following ``**kwargs`` to the base class); ``None``: any."""
    import inspect
    names: set = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names - _INTERNAL_ARGS
    return None


def _check_numbers(value: Any, where: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not 0 <= value <= MAX_INT_ARG:
            raise ValueError(f'{where} = {value} is out of range (0 .. {MAX_INT_ARG})')
        return
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_INT_ARG:
            raise ValueError(f'{where} = {value} is out of range (finite, |x| <= {MAX_INT_ARG})')
        return
    if isinstance(value, (list, tuple)):
        if len(value) > 64:
            raise ValueError(f'{where} has {len(value)} entries (at most 64)')
        for k, v in enumerate(value):
            _check_numbers(v, f'{where}[{k}]')
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, f'{where}.{k}')
        return
    raise ValueError(f'{where} has an unsupported value type {type(value).__name__}')


def check_num_classes(value: Any, where: str = 'num_classes') -> None:
    """``ValueError`` unless ``value`` is ``None`` or an integer (not a bool) in 0 .. :data:`MAX_CLASSES`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CLASSES:
        raise ValueError(f'{where} must be an int >= 0 and at most {MAX_CLASSES} (0 = no segmentation '
                         f'classifier), got {value!r}')


def check_model_args(backbone: str, head: str, num_classes: Any = None, backbone_args: Any = None,
                     head_args: Any = None, prefix: str = '') -> None:
    """The checks every zoo model's arguments pass before anything is built, wherever they come from
    (``mtvif_zoo.create_model``, ``timm.create_model`` with a ``config.json``'s ``model_args``,
    ``torch.hub.load``): ``num_classes`` an integer in 0 .. :data:`MAX_CLASSES`; ``backbone_args`` /
    ``head_args`` objects holding only the parameters of that backbone / head (``TypeError`` naming the
    accepted ones) and numbers in 0 .. :data:`MAX_INT_ARG` (``ValueError``). ``prefix`` goes in front
    of the argument names in messages (``model_args.`` for a config.json)."""
    check_num_classes(num_classes, f'{prefix}num_classes')
    for key, cls in (('backbone_args', get_backbone_cls(backbone)), ('head_args', get_head_cls(head))):
        sub = backbone_args if key == 'backbone_args' else head_args
        sub = sub or {}
        if not isinstance(sub, dict):
            raise TypeError(f'{prefix}{key} must be a dict (an object in config.json), got {type(sub).__name__}')
        accepted = _accepted_args(cls)
        if key == 'head_args' and head == 'cnn':  # the cnn head passes **kwargs on to the decoder it builds
            decoder = sub.get('decoder') or backbone
            if decoder not in list_backbones():
                raise ValueError(f'{prefix}head_args.decoder {decoder!r} is not a zoo backbone '
                                 f'({", ".join(list_backbones())})')
            dec = _accepted_args(get_backbone_cls(decoder).original_decoder)
            accepted = None if dec is None else {'decoder'} | dec
        if accepted is not None:
            extra = sorted(set(sub) - accepted)
            if extra:
                raise TypeError(f'{prefix}{key} has unknown argument(s) {extra} for {cls.__name__}; accepted: '
                                f'{", ".join(sorted(accepted)) or "none"}')
        _check_numbers(sub, f'{prefix}{key}')


class WeightsHook:
    """How the builder reaches the zoo's weight registry and sources (set by ``mtvif_zoo/__init__.py``
    from :mod:`mtvif_zoo.hub`; the models package imports nothing from the hub).

    * ``entry(arch, tag) -> (entry, shipped_dir) | None``: the current registry entry of ``arch.tag``
      (``tag=None``: the architecture's default weight), so a registry swapped at run time
      (``use_registry``) is honoured without touching timm's registry;
    * ``resolve(pretrained_cfg, cache_dir) -> (file, full_state_loader, source_info)``: the verified
      file (explicit > MTVIF_WEIGHTS > shipped > Hub > URL, sha256-checked) that timm's
      ``load_pretrained`` then reads;
    * ``names() -> [arch.tag, ...]``: every weight in the registry in use;
    * ``config(model_name, cache_dir)``: checks the ``config.json`` of an ``hf-hub:`` / ``local-dir:``
      name before anything is built from it (raises on a bad one).
    """
    config: Optional[Callable] = None
    entry: Optional[Callable] = None
    resolve: Optional[Callable] = None
    names: Optional[Callable] = None


def set_weights_hook(entry: Optional[Callable] = None, resolve: Optional[Callable] = None,
                     names: Optional[Callable] = None, config: Optional[Callable] = None) -> None:
    WeightsHook.entry, WeightsHook.resolve, WeightsHook.names = entry, resolve, names
    WeightsHook.config = config


def _current_cfg(variant: str, tag: Optional[str]) -> Optional[Dict[str, Any]]:
    """The cfg of ``variant.tag`` from the zoo's current registry (None: not registered there)."""
    if WeightsHook.entry is None:
        return None
    found = WeightsHook.entry(variant, tag)
    if not found:
        return None
    entry, shipped_dir = found
    return dict(_weights.weight_cfg(_BASE_CFGS[variant], entry, shipped_dir), architecture=variant,
                tag=entry['tag'])


def _create_mtvif(variant: str, pretrained: bool = False, **kwargs) -> MultiTaskVIF:
    unknown = sorted(set(kwargs) - set(_MODEL_KWARGS) - set(_TIMM_KWARGS))
    if unknown:
        raise TypeError(f'{variant}: unknown keyword argument(s) {unknown}; valid: {", ".join(_MODEL_KWARGS)}')
    given = kwargs.pop('pretrained_cfg', None)
    entry_cfg = None
    if isinstance(given, str) or (given is None and pretrained):
        entry_cfg = _current_cfg(variant, given)  # a registered weight: its facts, current registry
        if entry_cfg is None and WeightsHook.entry is not None:  # none in the registry in use: no weight facts
            entry_cfg = dict(_BASE_CFGS[variant], architecture=variant, tag=given if isinstance(given, str) else None)
    pretrained_cfg = resolve_pretrained_cfg(variant, pretrained_cfg=entry_cfg or given,
                                            pretrained_cfg_overlay=kwargs.pop('pretrained_cfg_overlay', None))
    cfg = pretrained_cfg.to_dict()
    found = WeightsHook.entry(variant, entry_cfg['tag']) if entry_cfg is not None and entry_cfg['tag'] else None
    if found:
        for k, v in found[0]['model_args'].items():
            kwargs.setdefault(k, v)  # the published weight's architecture (e.g. its in_chans / head)
    backbone, head, _ = VARIANTS[variant]
    backbone = kwargs.pop('backbone', None) or backbone
    head = kwargs.pop('head', None) or head
    if backbone not in list_backbones():
        raise ValueError(f'unknown backbone {backbone!r}; valid backbones: {", ".join(list_backbones())}')
    if head not in list_heads():
        raise ValueError(f'unknown head {head!r}; valid heads: {", ".join(list_heads())}')
    if kwargs.get('head_args') is None and head.startswith('mth'):
        kwargs['head_args'] = dict(MTH_CFGS[VARIANTS[variant][0]])
    # before any weight is fetched or layer allocated (timm.create_model('hf-hub:...') passes a
    # config.json's model_args straight here)
    check_model_args(backbone, head, kwargs.get('num_classes'), kwargs.get('backbone_args'), kwargs.get('head_args'))
    if head.startswith('mth') and not cfg.get('num_classes'):  # a baseline arch with an MTH: the 9 MSRS classes
        kwargs.setdefault('num_classes', len(MSRS_CLASSES))
    if kwargs.get('features_only'):
        kwargs['num_classes'] = 0  # the features wrapper does not use the classifier
        kwargs.setdefault('out_indices', tuple(range(get_backbone_cls(backbone).num_feature_levels)))
    overlay, filter_fn, source = {}, kwargs.pop('pretrained_filter_fn', None), None
    if pretrained:
        full_state, path = None, None
        if cfg.get('state_dict') is None and WeightsHook.resolve is not None:
            # the zoo's sources and sha256 check; timm's load_pretrained then reads the verified file
            path, full_state, source = WeightsHook.resolve(cfg, kwargs.get('cache_dir'))
            overlay = dict(file=path, source='')
        pretrained_classes = cfg.get('num_classes')
        filter_fn = filter_fn or partial(checkpoint_filter_fn, pretrained_num_classes=pretrained_classes,
                                         full_state=full_state, source_file=path and str(path))
    model = build_model_with_cfg(
        MultiTaskVIF, variant, pretrained, pretrained_cfg={**cfg, **overlay}, backbone=backbone, head=head,
        pretrained_filter_fn=filter_fn, feature_cfg=dict(feature_cls=FusionFeatures), **kwargs)
    if source is not None:
        model.pretrained_source = source
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
