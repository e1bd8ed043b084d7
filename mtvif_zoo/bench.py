"""``bench()``: images/s, achieved GFLOP/s and the fraction of this machine's conv roofline.

What one benchmark row measures (``mtvif bench``; :func:`bench` / :func:`bench_many` in Python):

* **the timed call**: ``mode='fuse'`` (default) times :func:`mtvif_zoo.fuse` on ``batch`` float
  ``B x 3 x H x W`` host tensors (input checks, padding, the model, clamping; on CUDA the pinned
  host -> device copy and the copy back included): what a user of ``fuse()`` gets.
  ``mode='model'``: only the model's inference forward on device-resident tensors, under
  ``torch.inference_mode`` (+ autocast for bf16 / fp16).
* **weights and inputs**: random init (``torch.manual_seed(0)``) and uniform random images by
  default; ``pretrained=True`` (``--pretrained``) loads the published weights (offline, shipped in
  the package), ``pair=(vis, ir)`` (``--pair VIS IR``) times that image pair (read and converted to
  float tensors before the clock starts, repeated ``batch`` times; the size is the pair's). Data can
  change the speed: e.g. subnormal numbers in an intermediate take the CPU's slow path.
* **warm-up, then several timed runs**; every figure is a median over the timed runs (or a ratio of
  medians), never a single run. CUDA runs are synchronised before the clock is read.
* **MACs**: :func:`mtvif_zoo.profile.count_macs` of the plain path in eval mode at the padded size
  (fusion output only: the segmentation classifier does not run at inference), on the ``meta``
  device. ``GFLOP/s = 2 x MACs x batch / median time``. Work a fast path adds (or skips) is not
  counted: the figure is useful work per second.
* **dtype**: ``fp32`` runs ``fuse(amp=False)``; ``bf16`` / ``fp16`` run ``fuse(amp=True,
  amp_dtype=...)`` (on the CPU: bf16 autocast with the oneDNN bf16 kernels where the CPU has them,
  see :mod:`mtvif_zoo.models.layers._fast`). With several dtypes (``--dtype both`` = fp32 and
  bf16) the rows run model by model, each model's dtypes back to back, and every non-fp32 row
  records ``speedup_vs_fp32`` (the fp32 row's median time / its own, same run) and
  ``max_abs_diff_vs_fp32`` (its fused image against ``fuse(amp=False)`` on the same input).
* **roofline**: a large dense 3x3 convolution, :data:`ROOFLINE_CONV` (``1 x 256 x 128 x 128`` input
  in channels_last memory, 256 output channels, padding 1, no bias, ``F.conv2d``; fp32, or bf16 /
  fp16 under autocast when the row is: each dtype has its own roofline, and every row records all
  of them, ``rooflines_gflops``),
  ``2 x 256 x 256 x 9 x 128 x 128 = 19.33 GFLOP`` per call, timed in the same process and
  *interleaved with the model runs* (one roofline timing right before each timed model run), so
  that both see the same machine load. Its median GFLOP/s is "100 %"; the row's
  ``roofline_fraction`` is the median over runs of ``model GFLOP/s / roofline GFLOP/s`` of each
  adjacent pair (machine load that drifts between runs cancels; on a shared machine single runs
  vary by 2x or more, the ratio much less).
* **peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` over warm-up and timed runs; on
  CPU the process's peak resident set size during warm-up and timed runs (on Linux the kernel's
  high-water mark ``VmHWM``, reset through ``/proc/self/clear_refs`` before the first call: exact,
  and no thread runs beside the timed code; elsewhere ``/proc/self/statm`` / ``ru_maxrss`` sampled
  every 2 ms by a thread, which slows a 2-core machine by a few percent) minus the resident size
  before the first call (after glibc's
  ``malloc_trim``, so memory an earlier row left in the heap does not hide this row's): what fusing
  adds on top of the loaded model and inputs.
* **allocator**: ``mtvif bench`` calls :func:`mtvif_zoo.fusion.tune_cpu_allocator` first (glibc
  keeps freed large buffers for reuse instead of page-faulting fresh zeroed memory for every
  activation); ``--no-tune-allocator`` measures glibc's defaults. The report says which.

Threads: PyTorch's intra-op thread count (``torch.get_num_threads()``) is recorded, not changed.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['bench', 'bench_many', 'roofline', 'ROOFLINE_CONV', 'BenchResult', 'DTYPES', 'format_table',
           'QUICK_SIZE', 'environment']

#: the roofline convolution: N, C_in, H, W, C_out, kernel (padding kernel // 2, stride 1)
ROOFLINE_CONV = dict(batch=1, in_chs=256, size=(128, 128), out_chs=256, kernel=3)
#: ``--quick``: small size, 1 warm-up + 3 timed runs
QUICK_SIZE = (64, 96)
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
#: ``--dtype`` aliases
DTYPE_ALIASES = {'both': ('fp32', 'bf16')}
SCHEMA = 'mtvif-bench/1'


def roofline_flops() -> int:
    c = ROOFLINE_CONV
    return 2 * c['batch'] * c['in_chs'] * c['out_chs'] * c['kernel'] ** 2 * c['size'][0] * c['size'][1]


def roofline_description() -> str:
    c = ROOFLINE_CONV
    return (f"conv2d {c['batch']}x{c['in_chs']}x{c['size'][0]}x{c['size'][1]} (channels_last) -> "
            f"{c['out_chs']} channels, "
            f"{c['kernel']}x{c['kernel']}, stride 1, padding {c['kernel'] // 2}, "
            f"{roofline_flops() / 1e9:.2f} GFLOP per call")


# --------------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, dtype: str):
    if dtype == 'fp32':
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[dtype])


class _Roofline:
    """The roofline conv, set up once per (device, dtype); :meth:`time` runs it ``inner`` times."""

    def __init__(self, device: torch.device, dtype: str):
        c = ROOFLINE_CONV
        g = torch.Generator().manual_seed(0)
        self.device, self.dtype = device, dtype
        # channels_last: oneDNN's / cuDNN's native layout, the fastest dense conv PyTorch runs here
        self.x = torch.randn(c['batch'], c['in_chs'], *c['size'], generator=g).to(device).contiguous(
            memory_format=torch.channels_last)
        self.w = (torch.randn(c['out_chs'], c['in_chs'], c['kernel'], c['kernel'], generator=g) * 0.02).to(device)
        self.pad = c['kernel'] // 2
        # enough calls per timing to last >= ~20 ms (GPUs run one call in well under a millisecond)
        self.inner = 1
        t = self.time()
        self.inner = max(1, min(200, math.ceil(0.02 / max(t, 1e-6))))

    def _call(self):
        with torch.inference_mode(), _autocast(self.device, self.dtype):
            return F.conv2d(self.x, self.w, padding=self.pad)

    def time(self) -> float:
        """Seconds per call (one timing of ``inner`` back-to-back calls)."""
        self._call()  # the first call after a model run can pay a layout / allocator change
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(self.inner):
            self._call()
        _sync(self.device)
        return (time.perf_counter() - t0) / self.inner

    def gflops(self) -> float:
        return roofline_flops() / self.time() / 1e9


def roofline(device: str = 'cpu', dtype: str = 'fp32', runs: int = 5) -> Dict[str, Any]:
    """Median GFLOP/s of :data:`ROOFLINE_CONV` on ``device`` in ``dtype`` (``runs`` timings after a warm-up)."""
    r = _Roofline(torch.device(device), dtype)
    vals = [r.gflops() for _ in range(runs)]
    return {'op': roofline_description(), 'dtype': dtype, 'gflops_median': statistics.median(vals),
            'gflops_runs': vals}


def _rss_bytes() -> int:
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):  # not Linux: ru_maxrss is a lifetime peak, use it as is
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if platform.system() == 'Darwin' else rss * 1024


def _malloc_trim() -> None:
    """Hand free heap pages back to the kernel (glibc ``malloc_trim``), so that the RSS baseline of
    the next measurement is live memory, not what an earlier row left in the heap."""
    import ctypes
    import ctypes.util
    import gc
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process to its current RSS (Linux >= 4.0:
    ``echo 5 > /proc/self/clear_refs``); False where that is not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return _hwm_bytes() is not None
    except OSError:
        return False


def _hwm_bytes() -> Optional[int]:
    """``VmHWM`` (peak RSS since the last reset) from ``/proc/self/status``, None if unavailable."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class _PeakRSS:
    """Peak resident set size while the ``with`` block runs.

    On Linux the kernel's own high-water mark: reset on entry (``/proc/self/clear_refs``), read on
    exit (``VmHWM``) -- exact, and nothing runs beside the timed code. Elsewhere (or where
    ``clear_refs`` is not writable) a thread samples the RSS every ``interval`` s; on a 2-core machine
    that thread costs the timed runs ~4 % (it preempts one of the two OpenMP workers), so
    :attr:`method` says which one was used.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self.method = 'sampled'
        self._stop = threading.Event()
        self._thread = None

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.base = _rss_bytes()
        self.peak = self.base
        if _reset_hwm():
            self.method = 'hwm'
            return self
        self.method = 'sampled'
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            hwm = _hwm_bytes()
            if hwm is not None:
                self.peak = max(self.peak, hwm)
        self.peak = max(self.peak, _rss_bytes())


# --------------------------------------------------------------------------------------------
# one benchmark row
# --------------------------------------------------------------------------------------------

@dataclass
class BenchResult:
    model: str
    size: Tuple[int, int]
    batch: int
    device: str
    dtype: str
    compile: bool
    mode: str
    macs_per_image: int
    warmup: int
    runs: int
    times_s: List[float]
    time_median_s: float
    images_per_s: float
    gflops: float
    roofline_gflops: float
    roofline_runs_gflops: List[float]
    roofline_fraction: float
    peak_memory_mb: float
    memory_method: str
    fast_path: bool
    threads: int
    allocator_tuned: bool
    max_abs_diff_vs_fp32: Optional[float] = None
    speedup_vs_fp32: Optional[float] = None
    rooflines_gflops: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    weights: str = 'random init'
    inputs: str = 'random uniform'

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d['size'] = list(self.size)
        return d


def _parse_size(size) -> Tuple[int, int]:
    if isinstance(size, str):
        parts = size.lower().replace(',', 'x').split('x')
        if len(parts) != 2:
            raise ValueError(f'size must be HxW (e.g. 480x640), got {size!r}')
        size = tuple(int(p) for p in parts)
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f'size must be positive, got {h}x{w}')
    return h, w


def _inputs(batch: int, size: Tuple[int, int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    vis = torch.rand(batch, 3, *size, generator=g)
    ir = torch.rand(batch, 1, *size, generator=g)
    return vis, ir


def load_pair(vis, ir, batch: int = 1):
    """A visible / infrared image pair (paths) as the float tensors ``fuse()`` converts them to
    (``batch x 3 x H x W`` and ``batch x 1 x H x W`` in [0, 1], the pair repeated ``batch`` times)."""
    from .fusion import _ir_to_grey, load_image, to_tensor_image
    v, _ = to_tensor_image(load_image(vis, 'visible'), 'visible', 'full')
    i, _ = to_tensor_image(load_image(ir, 'infrared'), 'infrared', 'minmax')
    if v.shape[-2:] != i.shape[-2:]:
        raise ValueError(f'the visible image {str(vis)!r} is {v.shape[-2]}x{v.shape[-1]} (HxW) but the infrared '
                         f'image {str(ir)!r} is {i.shape[-2]}x{i.shape[-1]}; give a registered pair of the same size')
    i = _ir_to_grey(i)
    return v.expand(batch, -1, -1, -1).contiguous(), i.expand(batch, -1, -1, -1).contiguous()


def _model_callable(model, vis, ir, device, dtype: str, compiled):
    """``mode='model'``: the inference forward on device tensors (what fuse() runs inside)."""
    from .fusion import _pad
    m = model.pad_multiple
    in_chans = model.in_chans
    v = _pad(vis[:, :in_chans] if in_chans == 1 else vis, m).to(device)
    i = _pad(ir.expand(-1, in_chans, -1, -1), m).contiguous().to(device)
    if device.type == 'cpu':
        v, i = v.contiguous(memory_format=torch.channels_last), i.contiguous(memory_format=torch.channels_last)
    fwd = compiled if compiled is not None else (
        lambda a, b: model.forward_head(model.forward_features(a, b), with_seg=False)[0])

    def call():
        with torch.inference_mode(), _autocast(device, dtype):
            return fwd(v, i)
    return call


def bench(model, size=None, batch: int = 1, device: str = 'cpu', dtype: str = 'fp32',
          compile: bool = False, warmup: int = 2, runs: int = 5, mode: str = 'fuse', name: Optional[str] = None,
          roof: Optional[_Roofline] = None, check_fp32: bool = False, pretrained: bool = False,
          pair: Optional[Tuple[Any, Any]] = None) -> BenchResult:
    """Benchmark one model (an instance, or a zoo name: random init, or the published weights with
    ``pretrained=True``) in one configuration, on random ``size`` images (default 480x640) or on
    ``pair`` = ``(vis, ir)`` paths (``size`` is then the pair's; a different ``size`` is an error).

    See the module docstring for what is timed and how each figure is defined.
    """
    from . import create_model
    from .fusion import _compiled_forward, fuse
    from .profile import count_macs

    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {", ".join(DTYPES)}, got {dtype!r}')
    if mode not in ('fuse', 'model'):
        raise ValueError(f"mode must be 'fuse' or 'model', got {mode!r}")
    if runs < 1 or warmup < 0 or batch < 1:
        raise ValueError(f'need runs >= 1, warmup >= 0, batch >= 1 (got {runs}, {warmup}, {batch})')
    if pair is not None:
        vis, ir = load_pair(*pair, batch=batch)
        hw = tuple(vis.shape[-2:])
        if size is not None and _parse_size(size) != hw:
            asked = _parse_size(size)
            raise ValueError(f'the pair is {hw[0]}x{hw[1]} (HxW) but size {asked[0]}x{asked[1]} was asked for; '
                             'leave the size out (it is the pair\'s) or give a pair of that size')
        size = hw
        inputs = f'pair {pair[0]} + {pair[1]}'
    else:
        size = _parse_size(size if size is not None else (480, 640))
        vis, ir = _inputs(batch, size)
        inputs = 'random uniform'
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda requested but torch.cuda.is_available() is False')
    weights = 'random init'
    if isinstance(model, str):
        name = name or model
        torch.manual_seed(0)
        model = create_model(model, pretrained=pretrained)
        if pretrained:
            cfg = getattr(model, 'pretrained_cfg', None) or {}
            weights = f'pretrained {cfg.get("architecture", name)}.{cfg.get("tag") or "default"}'
    elif pretrained:
        raise ValueError('pretrained=True needs a model name; a model instance is benchmarked with its own weights')
    else:
        weights = 'as given'
    name = name or (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or type(model).__name__
    model = model.eval().to(dev)
    notes = []
    if dev.type == 'cpu' and dtype == 'fp16':
        notes.append('fp16 autocast on CPU: PyTorch runs few CPU kernels in fp16; expect it to be slow')
    if dev.type == 'cpu' and dtype == 'bf16':
        from .models.layers._fast import bf16_kernels_available, cpu_has_bf16_units
        if not bf16_kernels_available():
            notes.append('this CPU has no oneDNN bf16 kernels (needs AVX512-BW/VL/DQ, AMX or AVX-NE-CONVERT): '
                         'bf16 runs '
                         "PyTorch's reference kernels, slower than fp32; fuse() defaults to fp32 here")
        elif not cpu_has_bf16_units():
            notes.append('oneDNN bf16 kernels without native bf16 units (no AMX-BF16 / AVX512-BF16): emulated; '
                         'fuse() defaults to fp32 here')

    m = model.pad_multiple
    padded = tuple(-(-s // m) * m for s in size)
    macs = count_macs(model, padded, training=False)
    amp = dtype != 'fp32'
    amp_dtype = DTYPES[dtype] if amp else None
    compiled = _compiled_forward(model) if compile else None
    if mode == 'fuse':
        def call():
            return fuse(vis, ir, model=model, batch_size=batch, amp=amp, amp_dtype=amp_dtype, compile=compile)
    else:
        call = _model_callable(model, vis, ir, dev, dtype, compiled)

    roof = roof if roof is not None else _Roofline(dev, dtype)
    times, roof_gf, ratios = [], [], []
    if dev.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(dev)
        base_mem = torch.cuda.memory_allocated(dev)
        mem_ctx = contextlib.nullcontext()
    else:
        _malloc_trim()
        mem_ctx = _PeakRSS()
    with mem_ctx as rss:
        for _ in range(max(warmup, 1 if compile else warmup)):
            call()
        _sync(dev)
        for _ in range(runs):
            rg = roof.gflops()
            _sync(dev)
            t0 = time.perf_counter()
            out = call()
            _sync(dev)
            t = time.perf_counter() - t0
            times.append(t)
            roof_gf.append(rg)
            ratios.append(2 * macs * batch / t / 1e9 / rg)
    if dev.type == 'cuda':
        peak_mb = (torch.cuda.max_memory_allocated(dev) - base_mem) / 2 ** 20
        mem_method = 'cuda max_memory_allocated during warm-up and timed runs, above the allocation before them'
    else:
        peak_mb = (rss.peak - rss.base) / 2 ** 20
        mem_method = ('peak RSS during warm-up and timed runs minus RSS before them ('
                      + ('kernel high-water mark, VmHWM after clear_refs' if rss.method == 'hwm'
                         else 'sampled every 2 ms')
                      + ')')

    diff = None
    if check_fp32 and dtype != 'fp32' and mode == 'fuse':
        ref = fuse(vis, ir, model=model, batch_size=batch, amp=False)
        diff = float((out.float() - ref).abs().max())

    t_med = statistics.median(times)
    return BenchResult(
        model=name, size=size, batch=batch, device=str(dev), dtype=dtype, compile=bool(compile), mode=mode,
        macs_per_image=int(macs), warmup=warmup, runs=runs, times_s=times, time_median_s=t_med,
        images_per_s=batch / t_med, gflops=2 * macs * batch / t_med / 1e9,
        roofline_gflops=statistics.median(roof_gf), roofline_runs_gflops=roof_gf,
        roofline_fraction=statistics.median(ratios), peak_memory_mb=peak_mb, memory_method=mem_method,
        fast_path=_fast_path_active(model, dev, dtype, compile), threads=torch.get_num_threads(),
        allocator_tuned=_allocator_tuned(), max_abs_diff_vs_fp32=diff, notes=notes, weights=weights, inputs=inputs)


def _allocator_tuned() -> bool:
    from . import fusion
    return fusion._ALLOCATOR_TUNED


def _fast_path_active(model, dev, dtype, compile) -> bool:
    try:
        from .models.layers._fast import fast_path_available
    except ImportError:
        return False
    from .models.layers._fast import bf16_kernels_available
    kernels = dtype == 'fp32' or (dtype == 'bf16' and bf16_kernels_available())
    return dev.type == 'cpu' and kernels and not compile and fast_path_available() and \
        all(getattr(mod, 'fast_path', True) for mod in model.modules())


def environment() -> Dict[str, Any]:
    env = {'torch': torch.__version__, 'python': platform.python_version(), 'platform': platform.platform(),
           'processor': _cpu_name(), 'cpu_count': os.cpu_count(), 'threads': torch.get_num_threads(),
           'mkldnn': torch.backends.mkldnn.is_available(), 'cpu_capability': torch.backends.cpu.get_cpu_capability(),
           'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'allocator_tuned': _allocator_tuned()}
    from .fusion import inference_dtype
    from .models.layers._fast import _bf16_flags_present, bf16_kernels_available
    env['cpu_bf16_units'] = _bf16_flags_present()  # amx_bf16 / avx512_bf16 in the CPU flags
    env['onednn_bf16_kernels'] = bf16_kernels_available()
    env['fuse_default_dtype_cpu'] = str(inference_dtype('cpu')).replace('torch.', '')
    try:
        env['load_average'] = list(os.getloadavg())
    except OSError:
        pass
    if torch.cuda.is_available():
        env['cuda'] = torch.version.cuda
        env['gpu'] = torch.cuda.get_device_name(0)
    return env


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def bench_many(models: Sequence[str], size=None, batch: int = 1, device: str = 'cpu',
               dtypes: Sequence[str] = ('fp32',), compile: bool = False, warmup: int = 2, runs: int = 5,
               mode: str = 'fuse', log=None, pretrained: bool = False,
               pair: Optional[Tuple[Any, Any]] = None) -> Dict[str, Any]:
    """Benchmark several models x dtypes; returns the JSON-ready report (``schema``, ``env``,
    ``roofline`` per dtype, ``results`` rows). ``size``: default 480x640, or the pair's;
    ``pretrained`` / ``pair``: see :func:`bench`."""
    dev = torch.device(device)
    if size is None and pair is None:
        size = (480, 640)
    size = None if size is None else _parse_size(size)  # None with a pair: bench() takes the pair's
    dtypes = [d for spec in dtypes for d in DTYPE_ALIASES.get(spec, (spec,))]
    dtypes = list(dict.fromkeys(dtypes))  # 'both,fp32' -> fp32, bf16
    env = environment()
    results, roofs = [], {}
    rooflines = {dtype: _Roofline(dev, dtype) for dtype in dtypes}
    gfs = {dtype: [] for dtype in dtypes}
    # model by model, each model's dtypes back to back: its fp32 and bf16 rows see the same load
    for name in models:
        t_fp32 = None
        for dtype in dtypes:
            r = bench(name, size=size, batch=batch, device=device, dtype=dtype, compile=compile, warmup=warmup,
                      runs=runs, mode=mode, roof=rooflines[dtype], pretrained=pretrained, pair=pair,
                      check_fp32=dtype != 'fp32' and mode == 'fuse')
            if dtype == 'fp32':
                t_fp32 = r.time_median_s
            elif t_fp32 is not None:
                r.speedup_vs_fp32 = t_fp32 / r.time_median_s
            results.append(r.as_dict())
            gfs[dtype].extend(r.roofline_runs_gflops)
            if log is not None:
                log(r)
    for dtype in dtypes:
        roofs[dtype] = {'op': roofline_description(), 'dtype': dtype, 'calls_per_timing': rooflines[dtype].inner,
                        'gflops_median': statistics.median(gfs[dtype]), 'gflops_runs': gfs[dtype]}
    for row in results:
        row['rooflines_gflops'] = {d: roofs[d]['gflops_median'] for d in dtypes}
    env['load_average_after'] = list(os.getloadavg()) if hasattr(os, 'getloadavg') else None
    size = size or tuple(results[0]['size'])
    return {'schema': SCHEMA, 'env': env, 'config': {'size': list(size), 'batch': batch, 'device': str(dev),
            'dtypes': list(dtypes), 'compile': bool(compile), 'warmup': warmup, 'runs': runs, 'mode': mode,
            'weights': 'published (pretrained=True)' if pretrained else 'random init',
            'inputs': [str(p) for p in pair] if pair is not None else 'random uniform'},
            'roofline': roofs, 'results': results}


def format_table(rows: Iterable[Dict[str, Any]]) -> str:
    """One line per row: images/s, GFLOP/s, % of roofline, peak memory (all medians / ratios); with
    rows of several dtypes also the speed-up over the same model's fp32 row and the max abs
    difference of the fused image from fp32 (in 1/255)."""
    rows = list(rows)
    vs = any(r.get('speedup_vs_fp32') is not None for r in rows)
    head = (f'{"model":<13}{"dtype":<6}{"comp":<5}{"size":>9}{"B":>3}{"GMAC/img":>10}{"median s":>10}{"img/s":>9}'
            f'{"GFLOP/s":>9}{"roof GF/s":>10}{"% roof":>8}{"peak MB":>9}'
            + (f'{"x fp32":>8}{"max|d| /255":>12}' if vs else ''))
    lines = [head, '-' * len(head)]
    for r in rows:
        line = (
            f'{r["model"]:<13}{r["dtype"]:<6}{"yes" if r["compile"] else "no":<5}{r["size"][0]:>4}x{r["size"][1]:<4}'
            f'{r["batch"]:>3}{r["macs_per_image"] / 1e9:>10.2f}{r["time_median_s"]:>10.3f}{r["images_per_s"]:>9.3f}'
            f'{r["gflops"]:>9.1f}{r["roofline_gflops"]:>10.1f}{100 * r["roofline_fraction"]:>7.1f}%'
            f'{r["peak_memory_mb"]:>9.0f}')
        if vs:
            s, d = r.get('speedup_vs_fp32'), r.get('max_abs_diff_vs_fp32')
            line += ((f'{s:>7.2f}x' if s is not None else f'{"-":>8}')
                     + (f'{255 * d:>12.2f}' if d is not None else f'{"-":>12}'))
        lines.append(line)
    return '\n'.join(lines)


def write_json(report: Dict[str, Any], path: str) -> None:
    with open(path, 'w') as f:
        json.dump(report, f, indent=2)
        f.write('\n')
