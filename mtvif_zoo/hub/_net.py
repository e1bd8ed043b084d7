"""Bounds on every network step of weight resolution: timeouts, retries, a deadline, clean failures.

Used by :mod:`mtvif_zoo.hub.pretrained` at three places (the Hub metadata probe, the Hub
download, the URL download) and by :mod:`mtvif_zoo.hub.cards` (a model card from a URL);
self-contained so that the loaders stay as they are.

Options (:class:`NetOptions`; environment variables read at call time, or
:func:`network_options` / ``NetOptions(...)`` passed as an argument):

================================  =======  ==========================================================
``MTVIF_CONNECT_TIMEOUT``         10 s     opening a connection and waiting for the response headers
``MTVIF_DOWNLOAD_TIMEOUT``        30 s     the longest wait for the next bytes of a body (read timeout)
``MTVIF_DOWNLOAD_RETRIES``        2        retries after a timeout, a dropped connection or an HTTP 5xx
                                           (1 s, 2 s, ... apart); 4xx and oversize are not retried
``MTVIF_RESOLVE_DEADLINE``        300 s    the most one remote source (Hub, URL) may take in all,
                                           retries included; then the next source is tried
================================  =======  ==========================================================

Failures are :class:`NetworkError` subclasses whose message says what happened in the user's
terms: :class:`ServerError` (the server answered HTTP 5xx, with the status), :class:`NetTimeout`
(no answer / stalled, with the bound that fired and its variable), :class:`OversizeError` (the
server announces or sends more bytes than the registry entry records). A download writes to a
``.partial`` file that is removed on every failure; :func:`remove_stale_partials` removes those
left by processes that were killed, :func:`remove_stale_incomplete` huggingface_hub's ``.incomplete``
files of killed Hub downloads. Every read and the wait for response headers end at the
deadline (a server dripping bytes within the timeouts included). ``hf_hub_download`` runs as a
:class:`HubCall`: the same bounds inside huggingface_hub's client, stopped at the deadline.
"""
import contextlib
import http.client
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

__all__ = ['NetOptions', 'network_options', 'NetworkError', 'NetTimeout', 'ServerError', 'ClientError', 'OversizeError',
           'head', 'download', 'run_with_deadline', 'remove_stale_partials', 'remove_stale_incomplete', 'Deadline',
           'HubCall']

ENV = {'connect_timeout': 'MTVIF_CONNECT_TIMEOUT', 'read_timeout': 'MTVIF_DOWNLOAD_TIMEOUT',
       'retries': 'MTVIF_DOWNLOAD_RETRIES', 'deadline': 'MTVIF_RESOLVE_DEADLINE'}
DEFAULTS = {'connect_timeout': 10.0, 'read_timeout': 30.0, 'retries': 2, 'deadline': 300.0}


class NetworkError(OSError):
    """A network step failed in a way the message describes (the loader then tries the next source)."""


class NetTimeout(NetworkError):
    """No answer, or a stalled transfer, within a configured bound."""


class ServerError(NetworkError):
    """The server answered with an HTTP error status."""

    def __init__(self, msg: str, status: int):
        super().__init__(msg)
        self.status = status


class ClientError(NetworkError):
    """The server answered HTTP 4xx (not found, forbidden...): retrying would not help."""


class OversizeError(NetworkError):
    """The server announces or sends more bytes than the registry entry of the file records."""


@dataclass(frozen=True)
class NetOptions:
    connect_timeout: float = DEFAULTS['connect_timeout']
    read_timeout: float = DEFAULTS['read_timeout']
    retries: int = DEFAULTS['retries']
    deadline: float = DEFAULTS['deadline']

    @classmethod
    def from_env(cls, **overrides) -> 'NetOptions':
        """The defaults, then the environment variables, then ``overrides`` (``None`` values ignored)."""
        vals: Dict[str, Any] = dict(DEFAULTS)
        for key, var in ENV.items():
            raw = os.environ.get(var)
            if raw is None or raw.strip() == '':
                continue
            try:
                vals[key] = int(raw) if key == 'retries' else float(raw)
            except ValueError:
                raise ValueError(f'{var}={raw!r} is not a number') from None
        vals.update({k: v for k, v in overrides.items() if v is not None})
        out = cls(**vals)
        for key in ('connect_timeout', 'read_timeout', 'deadline'):
            if not getattr(out, key) > 0:
                raise ValueError(f'{key} ({ENV[key]}) must be > 0 seconds, got {getattr(out, key)!r}')
        if out.retries < 0:
            raise ValueError(f'retries ({ENV["retries"]}) must be >= 0, got {out.retries!r}')
        return out


_stack: List[NetOptions] = []
_stack_lock = threading.Lock()


def current_options() -> NetOptions:
    """The options in force: the innermost :func:`network_options` block, else the environment."""
    with _stack_lock:
        return _stack[-1] if _stack else NetOptions.from_env()


@contextlib.contextmanager
def network_options(**kwargs) -> Iterator[NetOptions]:
    """``with network_options(read_timeout=5, retries=0): create_model(..., pretrained=True)``.

    Process-wide for the duration of the block (every thread's loads see it); the keyword
    arguments are the fields of :class:`NetOptions` and take precedence over the environment."""
    unknown = sorted(set(kwargs) - set(ENV))
    if unknown:
        raise TypeError(f'network_options: unknown option(s) {unknown}; valid: {", ".join(ENV)}')
    opts = NetOptions.from_env(**{k: getattr(replace(current_options(), **{
        k2: v for k2, v in kwargs.items() if v is not None}), k) for k in ENV})
    with _stack_lock:
        _stack.append(opts)
    try:
        yield opts
    finally:
        with _stack_lock:
            _stack.remove(opts)


class Deadline:
    """Seconds left of a source's time budget (``MTVIF_RESOLVE_DEADLINE``)."""

    def __init__(self, seconds: float, what: str):
        self.seconds, self.what = seconds, what
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, done: str = '') -> None:
        if self.left() <= 0:
            raise NetTimeout(f'{self.what}: gave up after the {self.seconds:g} s deadline ({ENV["deadline"]})'
                             + (f', {done}' if done else ''))


def run_with_deadline(fn: Callable[[], Any], seconds: float, what: str, budget: Optional[float] = None,
                      on_timeout: Optional[Callable[[], None]] = None, grace: float = 1.0) -> Any:
    """Run ``fn()`` (a client call whose own bounds we do not control, e.g. ``hf_hub_download``) in a
    daemon thread and wait at most ``seconds``; :class:`NetTimeout` when it has not returned by then.
    ``on_timeout()`` then asks the call to stop (:meth:`HubCall.cancel`) and the caller waits up to
    ``grace`` s for it to clean up; a thread still running after that is left to end by itself (a
    daemon: it cannot block the caller or the interpreter's exit)."""
    box: Dict[str, Any] = {}

    def target():
        try:
            box['value'] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box['error'] = e
    t = threading.Thread(target=target, name=f'mtvif-net: {what}', daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive() and on_timeout is not None:
        on_timeout()
        t.join(grace)
    if 'value' not in box and 'error' not in box:
        raise NetTimeout(f'{what}: no result within the {budget or seconds:g} s deadline ({ENV["deadline"]})')
    if 'error' in box:
        raise box['error']
    return box['value']


def _set_read_timeout(resp, seconds: float) -> None:
    """After the headers: the socket's timeout becomes the read timeout (urllib uses one timeout for
    connect and reads; the body may legitimately take longer to start than a connect)."""
    sock = getattr(getattr(getattr(resp, 'fp', None), 'raw', None), '_sock', None)
    if sock is not None:
        sock.settimeout(seconds)


def _is_timeout(e: BaseException) -> bool:
    import socket
    reason = getattr(e, 'reason', e)
    return isinstance(e, (TimeoutError, socket.timeout)) or isinstance(reason, (TimeoutError, socket.timeout))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx response itself is the answer (the Hub puts X-Linked-Size on it)


def _tracking_handlers(conns: List[http.client.HTTPConnection]) -> list:
    """urllib handlers that record the connections they open (so a watchdog can shut their sockets)."""
    def track(cls):
        def factory(host, **kwargs):
            conn = cls(host, **kwargs)
            conns.append(conn)
            return conn
        return factory

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(track(http.client.HTTPConnection), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):
            kwargs = {'context': self._context}
            if hasattr(self, '_check_hostname'):
                kwargs['check_hostname'] = self._check_hostname
            return self.do_open(track(http.client.HTTPSConnection), req, **kwargs)
    return [HTTP, HTTPS]


def _request(url: str, method: str, opts: NetOptions, deadline: Deadline, what: str,
             headers: Optional[Dict[str, str]] = None, follow_redirects: bool = True):
    """One request with the connect timeout (capped by the deadline); classified errors. Waiting for
    the response headers is bounded by the deadline too: a server that drips its header lines (each
    byte within the timeout) has its socket shut down when the deadline passes."""
    import socket
    timeout = max(0.05, min(opts.connect_timeout, deadline.left()))
    req = urllib.request.Request(url, method=method, headers={'User-Agent': 'mtvif_zoo', **(headers or {})})
    conns: List[http.client.HTTPConnection] = []
    handlers = _tracking_handlers(conns) + ([] if follow_redirects else [_NoRedirect])
    opener = urllib.request.build_opener(*handlers)
    fired = threading.Event()

    def watchdog():
        fired.set()
        for conn in list(conns):
            with contextlib.suppress(OSError, AttributeError):
                conn.sock.shutdown(socket.SHUT_RDWR)
    timer = threading.Timer(max(0.05, deadline.left()), watchdog)
    timer.daemon = True
    timer.start()
    try:
        try:
            return opener.open(req, timeout=timeout)
        finally:
            timer.cancel()
            if fired.is_set():
                deadline.check('waiting for the response headers')
    except NetTimeout:
        raise
    except urllib.error.HTTPError as e:
        if not follow_redirects and 300 <= e.code < 400:
            return e  # an HTTPError is also a response: status and headers
        e.close()
        if e.code >= 500:
            raise ServerError(f'{what}: the server answered HTTP {e.code} ({e.reason})', e.code) from None
        raise ClientError(f'{what}: HTTP {e.code} ({e.reason})') from None
    except (urllib.error.URLError, OSError) as e:
        if _is_timeout(e):
            raise NetTimeout(f'{what}: no answer within {timeout:g} s ({ENV["connect_timeout"]})') from None
        raise NetworkError(f'{what}: {getattr(e, "reason", e)}') from None


def _retrying(fn: Callable[[], Any], opts: NetOptions, deadline: Deadline) -> Any:
    """``fn()`` with up to ``opts.retries`` retries after timeouts, dropped connections and 5xx."""
    for attempt in range(opts.retries + 1):
        try:
            return fn()
        except (OversizeError, ClientError):
            raise
        except NetworkError as e:  # timeouts, 5xx, dropped connections
            wait = min(2.0 ** attempt, 8.0)
            if attempt == opts.retries or deadline.left() <= wait:
                if attempt:
                    e.args = (f'{e.args[0]} (after {attempt + 1} attempts)',) + e.args[1:]
                raise
            time.sleep(wait)
    raise AssertionError('unreachable')


def head(url: str, what: str, opts: Optional[NetOptions] = None, deadline: Optional[Deadline] = None,
         headers: Optional[Dict[str, str]] = None):
    """A bounded, retried ``HEAD`` (redirects not followed: a 3xx is an answer); returns
    ``(status, headers)``. Raises :class:`NetTimeout`, :class:`ServerError` (5xx, after the retries),
    :class:`ClientError` (4xx) or :class:`NetworkError`."""
    opts = opts or current_options()
    deadline = deadline or Deadline(opts.deadline, what)

    def once():
        deadline.check()
        resp = _request(url, 'HEAD', opts, deadline, what, headers, follow_redirects=False)
        try:
            return getattr(resp, 'status', None) or resp.code, dict(resp.headers)
        finally:
            resp.close()
    return _retrying(once, opts, deadline)


def announced_size(headers: Dict[str, str]) -> Optional[int]:
    """The file size a response announces (the Hub's ``X-Linked-Size`` for LFS files, else ``Content-Length``)."""
    low = {k.lower(): v for k, v in headers.items()}
    for key in ('x-linked-size', 'content-length'):
        try:
            return int(low[key])
        except (KeyError, ValueError):
            continue
    return None


def check_size(size: Optional[int], expected: Optional[int], what: str, record: str = 'its registry entry') -> None:
    """:class:`OversizeError` when the announced ``size`` exceeds the ``expected`` size ``record`` holds."""
    if size is not None and expected is not None and size > expected:
        raise OversizeError(f'{what}: the server announces {size:,} bytes but {record} records {expected:,}; the '
                            f'file is larger than {record} (wrong file or a broken server): not downloaded')


def download(url: str, dst: Path, what: str, expected_size: Optional[int] = None,
             opts: Optional[NetOptions] = None, cap: Optional[str] = None) -> Path:
    """Download ``url`` to ``dst`` within the bounds of ``opts``: connect / read timeouts, retries,
    the deadline, and at most ``expected_size`` bytes (the size the registry entry records; with
    ``cap``, e.g. ``'a model card'``, a limit for that kind of file instead). On any failure ``dst`` is
    removed (no partial file is left); the caller renames it into place after checking it."""
    opts = opts or current_options()
    deadline = Deadline(opts.deadline, what)
    part = Path(dst)

    def once():
        deadline.check()
        resp = _request(url, 'GET', opts, deadline, what)
        try:
            with resp:
                size = announced_size(dict(resp.headers))
                if cap is not None and size is not None and expected_size is not None and size > expected_size:
                    raise OversizeError(f'{what}: the server announces {size:,} bytes, more than the {expected_size:,} '
                                        f'bytes {cap} may have: not downloaded')
                check_size(size, expected_size, what)
                n = 0
                with open(part, 'wb') as f:
                    while True:
                        deadline.check(f'{n:,} bytes received')
                        # each read waits at most the read timeout and never past the deadline, and returns
                        # what one socket read gives (read1): a server dripping a byte a second cannot keep
                        # a 64 KiB read() waiting beyond the deadline
                        _set_read_timeout(resp, max(0.05, min(opts.read_timeout, deadline.left())))
                        try:
                            chunk = resp.read1(1 << 16)
                        except (OSError, http.client.HTTPException) as e:
                            if _is_timeout(e):
                                deadline.check(f'{n:,} bytes received')
                                raise NetTimeout(f'{what}: the transfer stalled (no data for {opts.read_timeout:g} s, '
                                                 f'{ENV["read_timeout"]}) after {n:,} bytes') from None
                            raise NetworkError(f'{what}: the connection broke after {n:,} bytes ({e})') from None
                        if not chunk:
                            break
                        n += len(chunk)
                        if expected_size is not None and n > expected_size:
                            raise OversizeError(
                                f'{what}: the server sent more than the {expected_size:,} bytes {cap} may have'
                                if cap is not None else
                                f'{what}: the server sent more than the {expected_size:,} bytes the registry entry '
                                'records; the file is larger than its registry entry')
                        f.write(chunk)
                length = announced_size(dict(resp.headers))
                if length is not None and n < length and urllib.parse.urlparse(url).scheme != 'file':
                    raise NetworkError(f'{what}: the connection closed after {n:,} of {length:,} bytes')
            return part
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise
    return _retrying(once, opts, deadline)


_PARTIAL_PID = re.compile(r'\.(\d+)\.[0-9a-f]+\.partial$')


def remove_stale_partials(folder: Path, prefix: str) -> None:
    """Remove ``<prefix>.<pid>.<tag>.partial`` files in ``folder`` whose process no longer runs (left by
    a download that was killed)."""
    if not folder.is_dir():
        return
    for p in folder.glob(f'{prefix}*.partial'):
        m = _PARTIAL_PID.search(p.name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        except PermissionError:
            pass


#: an ``.incomplete`` Hub download untouched this long (and whose lock is free) is stale
STALE_INCOMPLETE_S = 600.0


def remove_stale_incomplete(repo_id: str, cache_dir=None, min_age: float = STALE_INCOMPLETE_S) -> List[Path]:
    """Remove the ``*.incomplete`` blobs of the Hub repo ``repo_id`` left by downloads that were killed.

    huggingface_hub downloads a blob to ``blobs/<etag>.incomplete`` (1.0 - 1.10 checked: resumed by the
    next download of that blob) or ``blobs/<etag>.<random>.incomplete`` (1.20 and 2.4 checked: never
    reused, so a killed download leaves it for good), holding the file lock
    ``.locks/<repo folder>/<etag>.lock`` for the whole download. A file is removed only when that lock
    can be taken at once (no live process, this one included, is downloading the blob; the lock is
    held while the file is removed) *and* it has not been written for ``min_age`` s (a live download
    writes at least every read timeout; this also covers file systems where the lock is not
    enforced). Returns the removed files; never raises."""
    removed: List[Path] = []
    try:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name
        from huggingface_hub.utils import WeakFileLock
        cache = Path(cache_dir or constants.HF_HUB_CACHE)
        folder = repo_folder_name(repo_id=repo_id, repo_type='model')
        blobs = cache / folder / 'blobs'
        if not blobs.is_dir():
            return removed
        now = time.time()
        for p in sorted(blobs.glob('*.incomplete')):
            try:
                if now - p.stat().st_mtime < min_age:
                    continue
            except FileNotFoundError:
                continue
            lock = cache / '.locks' / folder / f'{p.name.split(".")[0]}.lock'
            if not lock.parent.is_dir():
                continue
            try:
                with WeakFileLock(lock, timeout=0.05):
                    if now - p.stat().st_mtime >= min_age:
                        p.unlink()
                        removed.append(p)
            except Exception:  # noqa: BLE001 - lock held (Timeout), file gone, no permission: leave it
                continue
    except Exception:  # noqa: BLE001 - housekeeping must never stop a load
        pass
    return removed


# ---------------------------------------------------------------------------------------------
# the zoo's bounds inside huggingface_hub's own HTTP client
# ---------------------------------------------------------------------------------------------

class Cancelled(NetworkError):
    """Raised inside a Hub download whose deadline has passed (ends the abandoned client call)."""


_hub_calls: Dict[int, 'HubCall'] = {}  # thread id -> the Hub call that thread runs
_hooks_lock = threading.Lock()


class HubCall:
    """One ``hf_hub_download`` run under the zoo's bounds, in the thread :func:`run_with_deadline` starts.

    huggingface_hub's HTTP client (httpx, huggingface_hub >= 1.0; setup.cfg asks for >= 1.20, see the
    README's "Slow or broken networks") is shared by the process; the zoo
    adds two event hooks to it that act only on threads running a :class:`HubCall` (every other use
    of huggingface_hub is untouched): each request gets the zoo's connect / read timeouts, capped by
    the time left of the deadline (``MTVIF_CONNECT_TIMEOUT`` / ``MTVIF_DOWNLOAD_TIMEOUT`` instead of
    ``HF_HUB_ETAG_TIMEOUT`` / ``HF_HUB_DOWNLOAD_TIMEOUT``), and each received chunk checks the
    deadline. After :meth:`cancel` (the deadline passed) the call's next request or chunk raises
    :class:`Cancelled`, so the abandoned download stops within one read timeout instead of going on
    (a stalled or dripping server kept it writing its ``.incomplete`` file and holding the cache
    lock, so the next load timed out too even from a healthy server); huggingface_hub then removes
    its ``.incomplete`` file and releases the lock itself."""

    def __init__(self, opts: NetOptions, deadline: Deadline):
        self.opts, self.deadline = opts, deadline
        self.cancelled = threading.Event()

    def run(self, fn: Callable[[], Any]) -> Any:
        _install_hf_hooks()
        ident = threading.get_ident()
        _hub_calls[ident] = self
        try:
            return fn()
        finally:
            _hub_calls.pop(ident, None)

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self) -> None:
        if self.cancelled.is_set() or self.deadline.left() <= 0:
            raise Cancelled(f'{self.deadline.what}: stopped at the {self.deadline.seconds:g} s deadline '
                            f'({ENV["deadline"]})')

    def timeouts(self) -> Dict[str, float]:
        left = max(0.05, self.deadline.left())
        connect, read = min(self.opts.connect_timeout, left), min(self.opts.read_timeout, left)
        return {'connect': connect, 'read': read, 'write': read, 'pool': connect}


def _on_request(request) -> None:
    call = _hub_calls.get(threading.get_ident())
    if call is not None:
        call.check()
        request.extensions = {**request.extensions, 'timeout': call.timeouts()}


def _on_response(response) -> None:
    call = _hub_calls.get(threading.get_ident())
    if call is not None and _CheckedStream is not None:
        response.stream = _CheckedStream(response.stream, call)


_CheckedStream: Optional[type] = None


def _install_hf_hooks() -> None:
    """Add :func:`_on_request` / :func:`_on_response` to huggingface_hub's shared client (once per
    client; a client without httpx event hooks, huggingface_hub < 1.0, is left alone)."""
    global _CheckedStream
    try:
        from huggingface_hub.utils import get_session
        client = get_session()
    except Exception:  # noqa: BLE001 - no hooks: the deadline still bounds the caller
        return
    hooks = getattr(client, 'event_hooks', None)
    if not isinstance(hooks, dict) or 'request' not in hooks or 'response' not in hooks:
        return
    with _hooks_lock:
        if _CheckedStream is None:
            import importlib  # the client's own package: httpx in huggingface_hub 1.x, httpx2 in 2.x
            base = getattr(importlib.import_module(type(client).__module__.split('.')[0]), 'SyncByteStream', None)
            if base is None:
                return

            class Checked(base):
                """The response body, checking the call's deadline at every chunk the socket gives."""

                def __init__(self, stream, call: HubCall):
                    self._stream, self._call = stream, call

                def __iter__(self):
                    for chunk in self._stream:
                        self._call.check()
                        yield chunk

                def close(self) -> None:
                    self._stream.close()
            _CheckedStream = Checked
        if _on_request not in hooks['request']:
            hooks['request'].append(_on_request)
        if _on_response not in hooks['response']:
            hooks['response'].append(_on_response)
