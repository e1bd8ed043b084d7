"""Constants the command line needs before it imports torch (kept free of heavy imports)."""

#: model used by ``fuse()`` / ``mtvif fuse`` when none is given: the best published weight on the
#: msrs_test20 comparison (README "Results": beats the pixel average on 6 of the paper's 7 metrics),
#: named with its tag so that publishing another mtvif_iv weight does not change the default silently
DEFAULT_MODEL = 'mtvif_iv.mfnet220'

#: the zoo's architectures (``mtvif_zoo.models.multitaskvif.VARIANTS`` holds their definitions)
ARCHITECTURES = ('mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv', 'swinfusion', 'emma_ufuser', 'seafusion', 'segmif')
