"""Swin window layout helpers: the shifted-window token permutation, its cache and the masks.

Ma et al., SwinFusion (2022) follows Liu et al., Swin Transformer (ICCV 2021), Sec. 3.2: attention
in ``ws x ws`` windows, every second block on a grid cyclically shifted by ``ws // 2`` with an
additive mask (-100, the original's value, not -inf) between tokens that came from different image
regions. timm's ``window_partition`` / ``window_reverse`` do the plain partition; what is here is
the fused path's: the cyclic shift + partition as *one* cached gather (:class:`WindowLayout`),
windows ordered by mask class so that each class shares one ``N x N`` mask (at most 4 classes).
"""
from collections import OrderedDict
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from timm.models.swin_transformer import window_partition

__all__ = ['MASK_VALUE', 'WindowLayout', 'WindowLayoutCache', 'build_layout', 'class_masks', 'permute_rows',
           'reference_shift_mask']

MASK_VALUE = -100.0  # the original's shifted-window mask value (not -inf)


class WindowLayout(NamedTuple):
    """Token permutation for one (H, W, batch, window, shift, device).

    ``fwd``: row ``k`` of the window-major token matrix (``nW x B x N`` rows, window-major, batch,
    then token in window) is row ``fwd[k]`` of ``x.reshape(B * H * W, C)``; the cyclic shift is
    included. ``inv`` is the inverse permutation. ``groups``: ``(mask class, first window, end
    window)`` ranges of the window axis, windows sorted by class. ``class_masks``: ``4 x N x N``
    additive masks (0 / -100) of the classes, ``None`` without shift.
    """
    fwd: torch.Tensor
    inv: torch.Tensor
    groups: Tuple[Tuple[int, int, int], ...]
    class_masks: Optional[torch.Tensor]


def class_masks(window_size: int, shift_size: int, device) -> torch.Tensor:
    """Additive masks of the 4 window classes of a cyclically shifted grid: 0 interior, 1 last
    column, 2 last row, 3 corner. Same values as the original ``calculate_mask``: -100 between
    tokens that came from different image regions."""
    r = torch.arange(window_size, device=device)
    rr, cc = torch.meshgrid(r, r, indexing='ij')
    in_row_tail = (rr.reshape(-1) >= window_size - shift_size).long()
    in_col_tail = (cc.reshape(-1) >= window_size - shift_size).long()
    masks = []
    for cls in range(4):  # the 4 mask classes, not windows
        label = 2 * in_row_tail * (cls // 2) + in_col_tail * (cls % 2)
        differ = label[:, None] != label[None, :]
        masks.append(torch.where(differ, MASK_VALUE, 0.0))
    return torch.stack(masks).float()


def build_layout(H: int, W: int, B: int, ws: int, shift: int, device) -> WindowLayout:
    """Built on the CPU with index arithmetic only (no Python loop over windows or pixels), then
    moved to ``device`` (works for the ``meta`` device too)."""
    nh, nw = H // ws, W // ws
    gi = torch.arange(nh).view(nh, 1).expand(nh, nw).reshape(-1)
    gj = torch.arange(nw).view(1, nw).expand(nh, nw).reshape(-1)
    if shift:
        cls = 2 * (gi == nh - 1).long() + (gj == nw - 1).long()
        counts = ((nh - 1) * (nw - 1), nh - 1, nw - 1, 1)  # interior, last column, last row, corner
    else:
        cls = torch.zeros_like(gi)
        counts = (nh * nw, 0, 0, 0)
    order = torch.sort(cls, stable=True).indices
    groups, start = [], 0
    for c, n in enumerate(counts):  # the 4 mask classes
        if n:
            groups.append((c, start, start + n))
            start += n
    gi, gj = gi[order], gj[order]
    rr, cc = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')
    # token (window w, position n) of the shifted image = pixel ((y + shift) % H, (x + shift) % W)
    ys = (gi[:, None] * ws + rr.reshape(1, -1) + shift) % H
    xs = (gj[:, None] * ws + cc.reshape(1, -1) + shift) % W
    pix = ys * W + xs  # nW x N
    fwd = (pix[:, None, :] + H * W * torch.arange(B)[None, :, None]).reshape(-1)
    inv = torch.empty_like(fwd)
    inv[fwd] = torch.arange(fwd.numel())
    masks = class_masks(ws, shift, 'cpu').to(device) if shift else None
    return WindowLayout(fwd.to(device), inv.to(device), tuple(groups), masks)


class WindowLayoutCache:
    """Cache of :class:`WindowLayout` s, one entry per input resolution ``(H, W)`` (each holding
    the layouts of the batch sizes / shifts / devices seen at that size). Shared by all blocks of a
    network; least recently used resolutions are dropped beyond ``max_resolutions``.
    Not part of the ``state_dict``."""

    def __init__(self, max_resolutions: int = 16):
        self.max_resolutions = max_resolutions
        self.entries: 'OrderedDict[Tuple[int, int], Dict[tuple, WindowLayout]]' = OrderedDict()

    def get(self, H: int, W: int, B: int, window_size: int, shift_size: int, device) -> WindowLayout:
        per_size = self.entries.get((H, W))
        if per_size is None:
            per_size = self.entries[(H, W)] = {}
            while len(self.entries) > self.max_resolutions:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end((H, W))
        key = (B, window_size, shift_size, torch.device(device))
        layout = per_size.get(key)
        if layout is None:
            # plain tensors even when called under inference_mode, so they can be saved for backward later
            with torch.inference_mode(False), torch.no_grad():
                layout = per_size[key] = build_layout(H, W, B, window_size, shift_size, device)
        return layout

    def clear(self) -> None:
        self.entries.clear()

    def __getstate__(self):  # pickling / deepcopy carry no cached tensors
        return {'max_resolutions': self.max_resolutions, 'entries': OrderedDict()}

    def __len__(self) -> int:
        return len(self.entries)


class _PermuteRows(torch.autograd.Function):
    """``x.index_select(0, idx)`` for a permutation ``idx``; backward is the gather by the inverse
    permutation (no scatter-add / atomics, deterministic)."""

    @staticmethod
    def forward(ctx, x, idx, inv):
        ctx.save_for_backward(inv)
        return x.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad):
        inv, = ctx.saved_tensors
        return grad.index_select(0, inv), None, None


def permute_rows(x: torch.Tensor, idx: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return _PermuteRows.apply(x, idx, inv)
    return x.index_select(0, idx)


def reference_shift_mask(H: int, W: int, ws: int, shift: int, device) -> torch.Tensor:
    """The original ``calculate_mask`` (``nW x N x N``, 0 / -100); used by the plain path only."""
    img_mask = torch.zeros((1, H, W, 1), device=device)
    cnt = 0
    for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, (ws, ws)).view(-1, ws * ws)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, MASK_VALUE).masked_fill(attn_mask == 0, 0.0)
