"""Pretrained weights: where ``pretrained=True`` loads from, integrity, and how files enter a model.

Loading order (first that has the file wins; every step is tested in ``tests/hub``):

1. **explicit, from the user**: ``pretrained_cfg_overlay=dict(state_dict=...)`` (in memory),
   ``pretrained_cfg_overlay=dict(file=PATH)`` (a ``.safetensors`` file or a folder holding
   ``model.safetensors``), a ``local-dir:PATH`` model name, ``checkpoint_path=PATH``
   (:func:`mtvif_zoo.create_model`), then the ``MTVIF_WEIGHTS`` environment variable (a folder
   of ``<arch.tag>/model.safetensors`` mirrors, or one ``.safetensors`` file);
2. **the shipped copy**: ``mtvif_zoo/hub/weights/<arch.tag>/model.safetensors`` (a fresh clone
   fuses offline);
3. **the Hugging Face Hub**: ``hf_hub_download(hf_hub_id, file, revision=<pinned commit>)`` —
   ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME`` / ``HF_HUB_CACHE`` and ``cache_dir`` are
   honoured by huggingface_hub itself;
4. **the URL** (``https://`` or ``file://``) whose file name carries the sha256 prefix (torch.hub
   ``check_hash`` naming), downloaded into ``<torch hub dir>/checkpoints`` (or ``cache_dir``).
   Skipped when ``HF_HUB_OFFLINE=1`` unless already cached or a ``file://`` URL.

Network bounds (:mod:`mtvif_zoo.hub._net`): every Hub / URL step has connect and read timeouts, a
bounded number of retries and a per-source deadline (``MTVIF_CONNECT_TIMEOUT``,
``MTVIF_DOWNLOAD_TIMEOUT``, ``MTVIF_DOWNLOAD_RETRIES``, ``MTVIF_RESOLVE_DEADLINE`` or
:func:`mtvif_zoo.hub.network_options`); a source that times out, answers 5xx or announces a file
larger than its registry entry is reported as such and the next source is tried; partial
downloads are removed.

``hf-hub:org/name[@rev]`` names load only from that repo (timm builds the architecture from its
``config.json``), ``local-dir:PATH`` names only from that folder.

Integrity: a file of a registered weight is checked against the registry's sha256 wherever it
comes from (``MTVIF_WEIGHTS`` mirror, shipped copy, Hub cache, URL cache) *before* it is read. A
file from an ``hf-hub:``/``local-dir:`` repo or next to a ``config.json`` written by
:func:`mtvif_zoo.hub.save_pretrained` is checked against the sha256 recorded there (Hub files
without one: against the LFS sha256 that names the cached blob). A mismatch raises
:class:`IntegrityError` naming the file and both hashes; a bad Hub or URL download is deleted
from the cache, never left looking valid. Only a file the user names explicitly and that has no
recorded hash is loaded unverified (its sha256 is logged and kept in ``model.pretrained_source``).
Files are only ever read with ``safetensors`` — never ``torch.load`` / pickle.

How a file enters a model is timm's: the builder (``mtvif_zoo/models/multitaskvif.py``) passes the
verified file to ``timm.models.load_pretrained`` with the zoo's ``pretrained_filter_fn``, which
handles the classifier semantics (``num_classes``: the published count takes the trained
classifier from ``model_full.safetensors``, 0 the fusion-only model, another count a fresh
classifier) and ``in_chans=1``. :func:`resolve_for_build` is the resolver it calls.
"""
import hashlib
import json
import logging
import os
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union
from urllib.parse import urlparse

import torch
from timm.models._hub import hf_split  # 'org/name@rev' -> ('org/name', 'rev' | None)

from . import registry
from .registry import WEIGHTS_FILE

__all__ = ['ENV_WEIGHTS', 'IntegrityError', 'WeightsNotFoundError', 'ResolvedWeights', 'sha256_file',
           'verify_file', 'resolve_pretrained', 'resolve_for_build', 'load_safetensors']

_logger = logging.getLogger(__name__)

#: environment variable naming a folder of ``<arch.tag>/model.safetensors`` (or one weight file)
ENV_WEIGHTS = 'MTVIF_WEIGHTS'
_LFS_POINTER = b'version https://git-lfs.github.com/spec/'


class IntegrityError(ValueError):
    """A weight file's sha256 is not the one recorded for it."""


class WeightsNotFoundError(FileNotFoundError):
    """No source holds the requested weights."""


class _Unavailable(Exception):
    """A source that does not have the file right now (offline, 404, 5xx, network): try the next."""


@dataclass
class ResolvedWeights:
    """Where a weight file came from: ``source`` in state_dict, file, checkpoint_path, local-dir,
    env, shipped, hf-hub, url; ``verified`` says whether ``sha256`` was checked against a record."""
    path: Optional[str]
    source: str
    sha256: Optional[str]
    verified: bool
    name: str
    detail: str = ''

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# integrity
# ---------------------------------------------------------------------------------------------

def sha256_file(path: Union[str, os.PathLike]) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _lfs_hint(path: Path) -> str:
    try:
        with open(path, 'rb') as f:
            head = f.read(len(_LFS_POINTER))
    except OSError:
        return ''
    return (' (the file is a Git LFS pointer, not the weights: run `git lfs pull`)'
            if head == _LFS_POINTER else '')


def verify_file(path: Union[str, os.PathLike], expected: str, what: str = '') -> str:
    """Return the file's sha256 if it equals ``expected``, else raise :class:`IntegrityError`."""
    path = Path(path)
    got = sha256_file(path)
    if got != expected:
        raise IntegrityError(f'sha256 mismatch for {what + ": " if what else ""}{str(path)!r}: expected {expected}, '
                             f'got {got}; refusing to load it{_lfs_hint(path)}')
    return got


def _recorded(config_path: Path, filename: str) -> Dict[str, Any]:
    """What a ``config.json`` written by save_pretrained records of ``filename`` (``sha256``, ``size``), if any."""
    try:
        with open(config_path, encoding='utf-8') as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return {}
    info = ((cfg.get('mtvif_zoo') or {}).get('files') or {}).get(filename) if isinstance(cfg, dict) else None
    return info if isinstance(info, dict) else {}


def _recorded_sha(config_path: Path, filename: str) -> Optional[str]:
    """The sha256 of ``filename`` recorded in a ``config.json`` written by save_pretrained, if any."""
    return _recorded(config_path, filename).get('sha256')


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------

def _user_path(path: Union[str, os.PathLike], filename: str, source: str, name: str,
               expected: Optional[str] = None) -> ResolvedWeights:
    p = Path(path).expanduser()
    if p.is_dir():
        file, config = p / filename, p / 'config.json'
    else:
        file, config = p, p.parent / 'config.json'
    if not file.is_file():
        pickles = sorted(q.name for q in file.parent.glob('*') if q.suffix in ('.bin', '.pth', '.pt'))
        hint = (f' (found {", ".join(pickles)}: pickled weights, which mtvif_zoo never loads; save with '
                'timm.models.save_for_hf(..., safe_serialization=True) or mtvif_zoo.hub.save_pretrained)'
                if pickles else '')
        raise WeightsNotFoundError(f'{source}: weights file not found: {str(file)!r}{hint}')
    if file.suffix != '.safetensors':
        raise ValueError(f'{source}: {str(file)!r} is not a .safetensors file; mtvif_zoo never unpickles weights '
                         '(convert once with mtvif_zoo.save_weights)')
    where = f'{source} {name}'
    if expected is None:
        expected = _recorded_sha(config, file.name)
        where += f' (sha256 recorded in {config})' if expected else ''
    if expected:
        return ResolvedWeights(str(file), source, verify_file(file, expected, where), True, name)
    sha = sha256_file(file)
    _logger.warning('%s: loading %s without a recorded sha256 to check (sha256 %s)', source, file, sha)
    return ResolvedWeights(str(file), source, sha, False, name, 'no recorded sha256: user-supplied file')


def _from_env(value: str, name: str, filename: str, expected: Optional[str]) -> Optional[ResolvedWeights]:
    p = Path(value).expanduser()
    if p.is_file():
        return _user_path(p, filename, f'{ENV_WEIGHTS}', name, expected)
    folder = p / name
    if (folder / filename).is_file():
        return _user_path(folder, filename, f'{ENV_WEIGHTS}', name, expected)
    if not p.exists():
        _logger.warning('%s=%s does not exist', ENV_WEIGHTS, value)
    return None


def _hf_errors() -> Tuple[type, ...]:
    """What ``hf_hub_download`` raises when the Hub cannot serve a file now (all versions we support)."""
    import importlib

    from huggingface_hub import errors
    names = ('HfHubHTTPError', 'LocalEntryNotFoundError', 'OfflineModeIsEnabled', 'EntryNotFoundError',
             'RepositoryNotFoundError', 'RevisionNotFoundError', 'FileMetadataError')
    out = [getattr(errors, n) for n in names if hasattr(errors, n)]
    for transport in ('httpx2', 'httpx', 'requests'):  # the HTTP library huggingface_hub uses
        try:
            mod = importlib.import_module(transport)
        except ImportError:
            continue
        exc = getattr(mod, 'HTTPError', None) or getattr(getattr(mod, 'exceptions', None), 'RequestException', None)
        if isinstance(exc, type):
            out.append(exc)
    return tuple(out) + (OSError,)


def _purge_hf(path: Path) -> None:
    """Remove a cached Hub file: the snapshot pointer and the blob it points to."""
    blob = path.resolve()
    for p in {path, blob}:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _hf_download_unbounded(repo_id: str, filename: str, revision: Optional[str], cache_dir, etag_timeout) -> str:
    from huggingface_hub import hf_hub_download

    from ..version import __version__
    return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, etag_timeout=etag_timeout,
                           library_name='mtvif_zoo', library_version=__version__)


def _hf_download(repo_id: str, filename: str, revision: Optional[str], cache_dir,
                 expected_size: Optional[int] = None, record: str = 'its registry entry') -> Path:
    """``hf_hub_download`` within the bounds of :mod:`._net`: online, one bounded HEAD first (a 5xx
    is reported as such after the retries, a size above ``expected_size`` as an oversize file, no
    answer as a timeout), then the download itself under the source deadline."""
    from huggingface_hub import constants

    from . import _net
    what = f'Hugging Face Hub {repo_id}@{revision or "main"}/{filename}'
    if revision is not None and _is_commit(revision):  # a commit's files never change: no request at all
        cached = _cached_copy(repo_id, filename, revision, cache_dir)
        if cached is not None:
            return cached
    opts = _net.current_options()
    deadline = _net.Deadline(opts.deadline, what)
    head_status = None
    endpoint = constants.ENDPOINT
    try:
        if not _offline():
            from huggingface_hub import hf_hub_url
            _skip_if_unanswered(endpoint, what)
            try:
                _, headers = _net.head(hf_hub_url(repo_id, filename, revision=revision), what, opts, deadline)
                size = _net.announced_size(headers)
                _net.check_size(size, expected_size, what, record)
                limit = getattr(constants, 'MAX_HTTP_DOWNLOAD_SIZE', None)
                if size is not None and limit and size > limit:  # huggingface_hub would say 'Install hf_xet'
                    raise _net.OversizeError(f'{what}: the server announces {size:,} bytes, more than any zoo weight '
                                             f'and than a plain HTTP download takes ({limit:,}): not downloaded')
            except _net.NetTimeout:  # no answer at all: the next files of this load need not wait again
                _UNANSWERED[endpoint] = time.monotonic()
                raise
            except _net.ClientError as e:
                head_status = e  # 401 / 404 ...: hf_hub_download raises the precise error (RepoNotFound ...)
        _net.remove_stale_incomplete(repo_id, cache_dir)  # left by Hub downloads that were killed
        call = _net.HubCall(opts, deadline)  # the zoo's timeouts inside the client; stopped at the deadline
        return Path(_net.run_with_deadline(
            lambda: call.run(lambda: _hf_download_unbounded(repo_id, filename, revision, cache_dir,
                                                            opts.connect_timeout)),
            max(0.05, deadline.left()), what, budget=opts.deadline, on_timeout=call.cancel))
    except _net.NetworkError as e:
        cached = None if isinstance(e, (_net.ClientError, _net.OversizeError)) else \
            _cached_copy(repo_id, filename, revision, cache_dir)
        if cached is not None:  # no answer / 5xx / stopped at the deadline: what huggingface_hub does offline
            warnings.warn(f'{e}; using the cached copy of commit {_snapshot_commit(cached)} downloaded before '
                          f'({cached})', UserWarning, stacklevel=2)
            return cached
        raise _Unavailable(str(e)) from e
    except _hf_errors() as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ''
        status = _http_status(e)
        answered = None  # what the server said, when it answered with an HTTP status
        if status is not None and status >= 500:
            answered = f'HTTP {status}'
        elif head_status is not None and 'HTTP' not in msg and 'Client Error' not in msg:
            answered = str(head_status).split(': ', 1)[-1]  # e.g. 'HTTP 404 (Not Found)'
        if answered is not None and 'connection' in msg.lower():
            # huggingface_hub's 'Please check your connection' (LocalEntryNotFoundError) would mislead: the
            # server was reached and answered; its text is kept only where there was no answer at all
            raise _Unavailable(f'{what}: the server answered {answered}') from e
        if answered is not None:
            msg = f'the server answered {answered}; {msg}'
        raise _Unavailable(f'{what}: {type(e).__name__}: {msg}') from e


#: Hub endpoint -> when (``time.monotonic()``) it last left a request unanswered
_UNANSWERED: Dict[str, float] = {}
#: for this long after a Hub endpoint left a request unanswered, the zoo does not ask it again (the
#: other files of the same load go straight to the cache or the next source instead of each waiting
#: out the timeouts and retries once more)
UNANSWERED_MEMORY_S = 60.0


def _skip_if_unanswered(endpoint: str, what: str) -> None:
    from . import _net
    since = _UNANSWERED.get(endpoint)
    if since is None:
        return
    age = time.monotonic() - since
    if age >= UNANSWERED_MEMORY_S:
        _UNANSWERED.pop(endpoint, None)
        return
    raise _net.NetTimeout(f'{what}: not asked: {endpoint} left a request unanswered {age:.0f} s ago (the zoo '
                          f'asks it again after {UNANSWERED_MEMORY_S:g} s)')


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in '0123456789abcdef' for c in revision)


def _cached_copy(repo_id: str, filename: str, revision: Optional[str], cache_dir) -> Optional[Path]:
    """The file of ``revision`` (a commit, or the commit a branch pointed to at the last download) in
    the HF cache, or ``None``. Its sha256 is checked by the caller like a downloaded file's."""
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    except Exception:  # noqa: BLE001 - a damaged cache is no copy
        return None
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _snapshot_commit(path: Path) -> str:
    parts = path.parts
    return parts[parts.index('snapshots') + 1] if 'snapshots' in parts[:-1] else '?'


def _http_status(e: BaseException) -> Optional[int]:
    """The HTTP status somewhere in an exception's cause chain (huggingface_hub wraps it)."""
    seen = 0
    while e is not None and seen < 8:
        code = getattr(getattr(e, 'response', None), 'status_code', None)
        if isinstance(code, int):
            return code
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _from_hf(hf_hub_id: str, filename: str, expected: Optional[str], cache_dir, name: str,
             source: str = 'hf-hub', expected_size: Optional[int] = None) -> ResolvedWeights:
    repo_id, revision = hf_split(hf_hub_id)
    record = 'its registry entry'
    if expected is None:  # not a registered (repo, revision): the repo's own record (sha256, size) first
        try:
            recorded = _recorded(_hf_download(repo_id, 'config.json', revision, cache_dir), filename)
        except _Unavailable:
            recorded = {}
        expected = recorded.get('sha256')
        if isinstance(recorded.get('size'), int) and not isinstance(recorded.get('size'), bool):
            expected_size, record = recorded['size'], "the repo's config.json"
    path = _hf_download(repo_id, filename, revision, cache_dir, expected_size, record)
    where = f'{name} from the Hugging Face Hub {repo_id}@{revision or "main"}'
    if expected is None:  # no record: the LFS sha256 that names the cached blob
        blob = path.resolve().name
        expected = blob if len(blob) == 64 and all(c in '0123456789abcdef' for c in blob) else None
    if expected is None:
        sha = sha256_file(path)
        _logger.warning('%s: no sha256 recorded for %s; loaded unverified (sha256 %s)', where, filename, sha)
        return ResolvedWeights(str(path), source, sha, False, name, f'{repo_id}@{revision or "main"}')
    try:
        sha = verify_file(path, expected, where)
    except IntegrityError:
        _purge_hf(path)  # never leave a bad download in the cache looking valid
        raise
    return ResolvedWeights(str(path), source, sha, True, name, f'{repo_id}@{revision or "main"}')


def _offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.is_offline_mode())


def _from_url(url: str, expected: str, cache_dir, name: str, expected_size: Optional[int] = None) -> ResolvedWeights:
    parsed = urlparse(url)
    fname = os.path.basename(parsed.path)
    m = torch.hub.HASH_REGEX.search(fname)
    prefix = m.group(1) if m else ''
    if len(prefix) < 8 or not expected.startswith(prefix):
        raise IntegrityError(f'{name}: URL file name {fname!r} must carry the sha256 prefix of the weights '
                             f'(torch.hub check_hash naming "name-<sha256[:8+]>.ext"); expected {expected}')
    cache = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / 'checkpoints'
    dst = cache / fname
    if dst.is_file():
        got = sha256_file(dst)
        if got == expected:
            return ResolvedWeights(str(dst), 'url', got, True, name, url)
        _logger.warning('cached %s has sha256 %s, expected %s: removing it and downloading again', dst, got, expected)
        dst.unlink()
    if _offline() and parsed.scheme != 'file':
        raise _Unavailable(f'URL {url}: offline (HF_HUB_OFFLINE=1) and not in the cache {cache}')
    from . import _net
    cache.mkdir(parents=True, exist_ok=True)
    _net.remove_stale_partials(cache, f'.{fname}.')  # left by downloads that were killed
    tmp = cache / f'.{fname}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial'
    try:
        # not torch.hub.download_url_to_file: it has no connect / read timeout and no size cap
        # (tests/hub/test_reliability_hub.py: a server that never answers hangs it)
        try:  # connect / read timeouts, retries, the deadline, at most the registered size
            _net.download(url, tmp, f'URL {url}', expected_size)
        except _net.NetworkError as e:
            raise _Unavailable(str(e)) from e
        except (OSError, ValueError) as e:
            raise _Unavailable(f'URL {url}: {type(e).__name__}: {e}') from e
        got = sha256_file(tmp)
        if got != expected:
            raise IntegrityError(f'sha256 mismatch for {name} downloaded from {url} (file {fname!r}): expected '
                                 f'{expected}, got {got}; the download was discarded, nothing was cached')
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ResolvedWeights(str(dst), 'url', expected, True, name, url)


def _what_to_do(failures, local: str) -> str:
    """The "what to do" sentence of the final :class:`WeightsNotFoundError`, fitting what happened at
    the remote sources (``failures``: their :class:`_Unavailable` errors); ``local`` names how to give
    a local copy instead."""
    from . import _net
    kinds = []
    for f in failures:
        cause = f.__cause__
        status = _http_status(cause) if cause is not None else None
        if isinstance(cause, _net.OversizeError):
            kind = 'oversize'
        elif isinstance(cause, (_net.NetTimeout, _net.Cancelled)) or 'deadline' in str(f):
            kind = 'timeout'
        elif isinstance(cause, _net.ServerError) or (status or 0) >= 500:
            kind = 'server'
        elif isinstance(cause, _net.ClientError) or status is not None or 'the server answered HTTP 4' in str(f):
            kind = 'missing'
        elif _offline():
            kind = 'offline'
        else:
            kind = 'network'
        if kind not in kinds:
            kinds.append(kind)
    advice = {
        'timeout': f'retry later, or give each source more time ({_net.ENV["deadline"]}, now '
                   f'{_net.current_options().deadline:g} s; {_net.ENV["read_timeout"]} for a slow transfer)',
        'server': 'the server failed (HTTP 5xx): retry later',
        'network': 'check the network connection (proxy, HF_ENDPOINT), then retry',
        'missing': 'the server does not have the file: check HF_ENDPOINT (a mirror may lack the repo) and the '
                   'name / revision',
        'oversize': 'the server offers another file than the one recorded (a broken server or mirror): use '
                    'another source',
        'offline': 'HF_HUB_OFFLINE=1 and not in the cache: unset it once to download',
    }
    steps = [advice[k] for k in kinds]
    steps.append(f'{"or " if steps else ""}use a local copy: {local}')
    if kinds and not _offline():
        steps.append('a file downloaded before loads from the cache with HF_HUB_OFFLINE=1, without asking the '
                     'server')
    return '. What to do: ' + '; '.join(steps) + '.'


def _cfg_name(cfg: Dict[str, Any]) -> str:
    arch, tag = cfg.get('architecture') or '?', cfg.get('tag')
    return f'{arch}.{tag}' if tag else arch


def resolve_pretrained(pretrained_cfg: Dict[str, Any], cache_dir=None) -> ResolvedWeights:
    """Find (and verify) the weight file ``pretrained_cfg`` asks for, following the loading order.

    ``pretrained_cfg`` is a model's ``pretrained_cfg`` (``architecture``, ``tag``, ``file``,
    ``hf_hub_id``, ``hf_hub_filename``, ``url``, ``source``). Raises :class:`WeightsNotFoundError`
    listing what was tried, :class:`IntegrityError` on a hash mismatch.
    """
    cfg = dict(pretrained_cfg)
    arch, tag = cfg.get('architecture'), cfg.get('tag')
    name = _cfg_name(cfg)
    filename = cfg.get('hf_hub_filename') or WEIGHTS_FILE
    source = cfg.get('source')
    if not isinstance(filename, str) or not filename.endswith('.safetensors'):
        # e.g. a config.json read by timm.create_model('hf-hub:...') naming pytorch_model.bin
        raise ValueError(f'{name}: hf_hub_filename {filename!r} is not a .safetensors file; mtvif_zoo never '
                         'unpickles weights (convert once with mtvif_zoo.save_weights)')

    if source == 'local-dir':
        return _user_path(cfg['file'], filename, 'local-dir', name)
    if source == 'hf-hub':
        try:
            return _from_hf(cfg['hf_hub_id'], filename, None, cache_dir, name)
        except _Unavailable as e:
            raise WeightsNotFoundError(str(e) + _what_to_do(
                [e], 'the downloaded repo folder as "local-dir:PATH"')) from e

    entry = registry.find_weight(arch, tag)
    shipped = registry.shipped_dir() / name / filename
    if entry is not None and filename not in entry['files']:
        raise WeightsNotFoundError(f'{name} has no {filename!r}; published files: {", ".join(entry["files"])}')
    expected = entry['files'][filename]['sha256'] if entry else None

    file = cfg.get('file')
    if file and not (entry and Path(file).resolve() == (registry.shipped_dir() / name / WEIGHTS_FILE).resolve()):
        return _user_path(file, filename, 'file', name)

    tried, failures = [], []
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        found = _from_env(env, name, filename, expected)
        if found is not None:
            return found
        tried.append(f'{ENV_WEIGHTS}={env}: no {name}/{filename}')
    if entry is None:
        published = [n for n in registry.list_weights() if n.split('.')[0] == arch]
        raise WeightsNotFoundError(
            f'no pretrained weights are published for {name!r} (published for {arch}: '
            f'{", ".join(published) or "none yet"}). Use pretrained=False, or give weights explicitly: '
            f'pretrained_cfg_overlay=dict(file=PATH), "local-dir:PATH", checkpoint_path=PATH or {ENV_WEIGHTS}=DIR'
            + (f' [{"; ".join(tried)}]' if tried else ''))

    if shipped.is_file():
        return ResolvedWeights(str(shipped), 'shipped', verify_file(shipped, expected, f'shipped copy of {name}'),
                               True, name)
    tried.append(f'shipped copy: {shipped} not present')

    if cfg.get('hf_hub_id'):
        pinned = (entry['hf_hub_id'], entry['revision'])
        hub_expected = expected if hf_split(cfg['hf_hub_id']) == pinned else None  # another revision: its own record
        try:
            return _from_hf(cfg['hf_hub_id'], filename, hub_expected, cache_dir, name,
                            expected_size=entry['files'][filename].get('size') if hub_expected else None)
        except _Unavailable as e:
            _logger.warning('%s', e)
            tried.append(str(e))
            failures.append(e)

    url = cfg.get('url') if filename == WEIGHTS_FILE else entry['files'][filename].get('url')
    if url:
        try:
            return _from_url(url, expected, cache_dir, name, entry['files'][filename].get('size'))
        except _Unavailable as e:
            _logger.warning('%s', e)
            tried.append(str(e))
            failures.append(e)
    raise WeightsNotFoundError(f'could not get {name}/{filename} from any source: ' + '; '.join(tried) + _what_to_do(
        failures, f"pretrained_cfg_overlay=dict(file='path/{filename}') or {ENV_WEIGHTS}=DIR (a folder of "
                  f"{name}/{filename}), sha256-checked against the registry"))


# ---------------------------------------------------------------------------------------------
# loading into a model
# ---------------------------------------------------------------------------------------------

def load_safetensors(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file (never pickle); a clear error for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device='cpu')
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f'{str(path)!r} is not a readable safetensors file ({e}){_lfs_hint(Path(path))}') from None


def check_safetensors(path: Union[str, os.PathLike]) -> None:
    """Read only the header of a ``.safetensors`` file (its tensor names, dtypes and offsets, checked
    against the file size): a clear error for an empty, truncated or foreign file before timm reads it."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework='pt') as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f'{str(path)!r} is not a readable safetensors file ({e}){_lfs_hint(Path(path))}') from None


def _full_cfg(cfg: Dict[str, Any], resolved: ResolvedWeights) -> Dict[str, Any]:
    """The cfg that names the full multi-task copy next to the file ``resolved`` came from."""
    full = dict(cfg, hf_hub_filename=registry.FULL_WEIGHTS_FILE)
    if resolved.source in ('file', 'local-dir') and resolved.path:
        full['file'] = str(Path(resolved.path).parent)  # a folder: the file name is hf_hub_filename
    return full


def resolve_for_build(pretrained_cfg: Dict[str, Any], cache_dir=None):
    """The weights resolver of the zoo's model builder (``set_weights_resolver``).

    Returns ``(path, full_state, source)``: the verified ``.safetensors`` file timm's
    ``load_pretrained`` reads, a loader of the full multi-task copy (``model_full.safetensors``,
    from the same source, sha256-checked; ``None`` when there is none) that the filter calls only
    when a fusion-only file must give a model with its trained classifier, and where it came from.
    """
    cfg = dict(pretrained_cfg)
    resolved = resolve_pretrained(cfg, cache_dir=cache_dir)
    check_safetensors(resolved.path)  # timm's load_pretrained would raise safetensors' own error, no file name

    def full_state() -> Optional[Dict[str, torch.Tensor]]:
        try:
            full = resolve_pretrained(_full_cfg(cfg, resolved), cache_dir=cache_dir)
        except (WeightsNotFoundError, KeyError):
            return None
        return load_safetensors(full.path)

    return resolved.path, full_state, resolved.as_dict()
