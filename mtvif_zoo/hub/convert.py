"""Convert an original release checkpoint (``.pth``) into a zoo folder: ``mtvif convert``.

The original SwinFusion / EMMA Ufuser / SeAFusion / SegMiF weights have no licence that allows
redistribution, so the zoo ships the converters, not the weights: a user who downloaded a release
runs ``mtvif convert --arch swinfusion --checkpoint SwinFusion.pth --out DIR`` and gets a
:func:`~mtvif_zoo.hub.save_pretrained` folder (``model.safetensors``, ``config.json``, card)
that ``create_model('swinfusion', pretrained=True, pretrained_cfg_overlay=dict(file=DIR))`` loads.
The ``.pth`` is read once with ``torch.load(weights_only=True)`` (no arbitrary unpickling); its
sha256 is recorded in the config and the card.
"""
import os
from pathlib import Path
from typing import Dict, Union

import torch

from .._factory import get_original_converter

__all__ = ['ORIGINAL_ARCHS', 'convert_original', 'read_original_checkpoint', 'convert_checkpoint']

PathLike = Union[str, os.PathLike]

#: architecture -> (backbone whose registered converter reads the original, the original network, the stem
#: conv that gives in_chans)
ORIGINAL_ARCHS: Dict[str, Dict[str, str]] = {
    'swinfusion': dict(backbone='swinfusion',
                       original='Linfeng-Tang/SwinFusion models/network_swinfusion1.SwinFusion',
                       stem='backbone.conv_first1.weight'),
    'emma_ufuser': dict(backbone='ufuser', original='Zhaozixiang1228/MMIF-EMMA nets/Ufuser.Ufuser',
                        stem='backbone.V_en_1.embed.weight'),
    'seafusion': dict(backbone='seafusion', original='Linfeng-Tang/SeAFusion FusionNet.FusionNet',
                      stem='backbone.vis_conv.conv.weight'),
    'segmif': dict(backbone='segmif', original='JinyuanLiu-CV/SegMiF core/model_fusion.Fusion_Network_rmseg',
                   stem='backbone.conv1_vis.weight'),
}


def convert_original(arch: str, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """An original network's state dict -> the zoo's ``create_model(arch)`` state dict (``backbone.*``,
    ``head.decoder.*``). ``module.`` prefixes (DataParallel) are stripped."""
    if arch not in ORIGINAL_ARCHS:
        raise ValueError(f'no converter for {arch!r}: the original networks are {", ".join(ORIGINAL_ARCHS)} '
                         '(the MultiTaskVIF variants have no original release to convert)')
    state_dict = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state_dict.items()}
    out = get_original_converter(ORIGINAL_ARCHS[arch]['backbone'])(state_dict)
    if arch == 'swinfusion':  # (backbone, decoder) pair
        backbone, decoder = out
        out = {**{f'backbone.{k}': v for k, v in backbone.items()},
               **{f'head.decoder.{k}': v for k, v in decoder.items()}}
    return out


def read_original_checkpoint(path: PathLike) -> Dict[str, torch.Tensor]:
    """The tensors of an original ``.pth`` (``torch.load(weights_only=True)``), unwrapped from the
    usual ``params`` / ``state_dict`` / ``model`` containers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {str(path)!r}')
    try:
        obj = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), EOFError ...
        raise ValueError(f'{str(path)!r} is not a checkpoint torch.load(weights_only=True) can read '
                         f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})') from None
    for key in ('params', 'params_ema', 'state_dict', 'model'):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f'{str(path)!r} does not hold a state dict of tensors')
    return obj


def convert_checkpoint(arch: str, checkpoint: PathLike, out: PathLike, tag: str = 'converted') -> Path:
    """Convert ``checkpoint`` (an original release of ``arch``) into a save_pretrained folder ``out``.

    ``in_chans`` follows the checkpoint's stem conv (the released fusion models are 1-channel,
    Y-channel mode). The converted state dict must load with ``strict=True``; the folder's
    ``config.json`` records the source file name and sha256 (``mtvif_zoo.source``).
    """
    from .._factory import create_model
    from ..weights import check_state_dict
    from .cards import card_block
    from .pretrained import sha256_file
    from .publish import save_pretrained
    checkpoint = Path(checkpoint)
    sha = sha256_file(checkpoint) if checkpoint.is_file() else None
    state = convert_original(arch, read_original_checkpoint(checkpoint))
    stem = ORIGINAL_ARCHS[arch]['stem']
    if stem not in state:
        raise ValueError(f'{str(checkpoint)!r} is not an original {arch} checkpoint '
                         f'({ORIGINAL_ARCHS[arch]["original"]}): '
                         f'no {stem} after conversion')
    in_chans = int(state[stem].shape[1])
    model = create_model(arch, in_chans=in_chans)
    check_state_dict(model, state, source=f'{checkpoint} converted as {arch}')
    model.load_state_dict(state, strict=True)
    source = {'file': checkpoint.name, 'sha256': sha, 'original': ORIGINAL_ARCHS[arch]['original'],
              'converter': f'mtvif_zoo.hub.convert.convert_original({arch!r})'}
    description = (f'Converted from the original release {checkpoint.name} (sha256 `{sha}`) of '
                   f'{ORIGINAL_ARCHS[arch]["original"]} with `mtvif convert --arch {arch}`; not redistributed by '
                   'mtvif_zoo (the original weights carry no licence that allows it).')
    card = card_block(model, description=description)
    return save_pretrained(model, out, name=f'{arch}.{tag}', dataset=f'the original release ({checkpoint.name})',
                           card=card, license='other', source=source)
