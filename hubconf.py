"""torch.hub entry points for mtvif_zoo.

    torch.hub.load('<owner>/mtvif_zoo', 'multitaskvif_iv', pretrained=True)
    torch.hub.load('/path/to/clone', 'multitaskvif_iii', source='local', pretrained=False, in_chans=1)

Every entry point takes ``pretrained`` and the keyword overrides of ``mtvif_zoo.create_model``
(``backbone``, ``head``, ``in_chans``, ``num_classes``, ...).
"""
dependencies = ['torch', 'torchvision', 'timm', 'huggingface_hub', 'safetensors', 'einops', 'PIL', 'numpy', 'tqdm']

from mtvif_zoo import create_model as _create_model  # noqa: E402


def _entry(name, doc):
    def entry(pretrained=False, **kwargs):
        return _create_model(name, pretrained=pretrained, **kwargs)
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


multitaskvif_i = _entry('mtvif_i', 'MultiTaskVIF I: SwinFusion backbone + Multi-Task Head (Table 7).')
multitaskvif_ii = _entry('mtvif_ii', 'MultiTaskVIF II: EMMA Ufuser backbone + Multi-Task Head (Table 7).')
multitaskvif_iii = _entry('mtvif_iii', 'MultiTaskVIF III: SeAFusion backbone + Multi-Task Head (Table 7).')
multitaskvif_iv = _entry('mtvif_iv', 'MultiTaskVIF IV: SegMiF backbone + Multi-Task Head (Table 7).')
mtvif_i = _entry('mtvif_i', multitaskvif_i.__doc__)
mtvif_ii = _entry('mtvif_ii', multitaskvif_ii.__doc__)
mtvif_iii = _entry('mtvif_iii', multitaskvif_iii.__doc__)
mtvif_iv = _entry('mtvif_iv', multitaskvif_iv.__doc__)
seafusion = _entry('seafusion', 'Original SeAFusion fusion network (baseline, no segmentation).')
swinfusion = _entry('swinfusion', 'Original SwinFusion fusion network (baseline, no segmentation).')
emma_ufuser = _entry('emma_ufuser', "Original EMMA Ufuser fusion network (baseline, no segmentation).")
segmif = _entry('segmif', 'SegMiF fusion network, segmentation-free layout (baseline).')

del _entry
