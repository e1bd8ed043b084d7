"""A loopback Hugging Face Hub for tests: real ``huggingface_hub`` / timm / torch.hub clients, no network.

Serves on ``127.0.0.1:<free port>``:

* ``HEAD`` / ``GET /{org}/{name}/resolve/{revision}/{path}`` with the headers ``hf_hub_download``
  needs: ``X-Repo-Commit`` (40 hex), ``ETag`` (the file's sha256, as the Hub gives for LFS
  files), exact ``Content-Length``, ``Accept-Ranges`` and ``Range`` -> 206 (resumed downloads);
  missing files 404 with ``X-Error-Code: EntryNotFound``, unknown repos ``RepoNotFound``,
  unknown revisions ``RevisionNotFound``;
* ``GET /files/{name}``: plain files for the URL source (``add_file``);
* the upload endpoints ``push_to_hub`` uses: ``POST /api/repos/create``, ``/api/validate-yaml``,
  ``/api/models/{repo}/preupload/{rev}`` (answers ``uploadMode: regular`` for every file, so
  content travels base64 in the commit; the LFS/Xet upload protocols are *not* implemented) and
  ``/api/models/{repo}/commit/{rev}`` (ndjson; creates a new commit and moves the branch).

Faults for error-path tests (:meth:`LoopbackHub.fault`): an HTTP status (e.g. 500) for N
requests, a body cut off after N bytes with the connection closed (the client sees a broken
transfer), a consistently short body (``Content-Length`` of the short body), tampered
content of the same size, an announced ``Content-Length`` other than the body's (e.g. 10 TB), a GET
that stalls after the headers and N body bytes (``stall_after``) or drips one byte every ``drip`` s, or
other bytes in place of the file (``body``).
:class:`StallServer` covers what an HTTP server does not: accepting and never answering, or
stalling after the headers.

Every request is recorded in ``hub.requests`` as ``(method, path)``.
"""
import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union
from urllib.parse import unquote, urlparse


@dataclass
class Fault:
    method: Optional[str] = None        # 'HEAD' / 'GET' / None (both)
    path_endswith: Optional[str] = None
    status: Optional[int] = None        # answer this status instead
    truncate_at: Optional[int] = None   # send this many body bytes of a full-length response, then drop the connection
    short_body: bool = False            # send half the body with a matching Content-Length (GET only)
    tamper: bool = False                # flip bytes, same size (GET only)
    times: int = 1                      # how many matching requests it affects (-1: all)
    announce_length: Optional[int] = None  # HEAD/GET announce this Content-Length (e.g. 10 TB), send the real body
    stall_after: Optional[int] = None   # GET: headers and this many body bytes, then silence until the hub stops
    drip: Optional[float] = None        # GET: headers, then one body byte every ``drip`` seconds
    body: Optional[bytes] = None        # GET: serve these bytes instead of the file (same ETag / commit headers)

    def matches(self, method: str, path: str) -> bool:
        return (self.times != 0 and (self.method is None or self.method == method)
                and (self.path_endswith is None or path.endswith(self.path_endswith)))


def _commit_id(parent: Optional[str], files: Dict[str, bytes], message: str) -> str:
    h = hashlib.sha1()
    h.update((parent or '').encode() + message.encode())
    for k in sorted(files):
        h.update(k.encode() + hashlib.sha256(files[k]).digest())
    return h.hexdigest()


class LoopbackHub:
    def __init__(self):
        self.repos: Dict[str, Dict] = {}
        self.static: Dict[str, bytes] = {}
        self.faults: List[Fault] = []
        self.requests: List[Tuple[str, str]] = []
        self.commits: List[Dict] = []
        self._lock = threading.Lock()
        self.stopped = threading.Event()  # ends stalled / dripping responses
        hub = self

        class Handler(_Handler):
            pass
        Handler.hub = hub
        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name='loopback-hub', daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f'http://{host}:{port}'

    def start(self) -> 'LoopbackHub':
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- content -----------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: Union[str, Path, Dict[str, bytes]], message: str = 'initial') -> str:
        """Create ``repo_id`` or commit ``files`` (a folder or ``{path: bytes}``) to it; returns the commit."""
        if not isinstance(files, dict):
            folder = Path(files)
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}
        with self._lock:
            repo = self.repos.setdefault(repo_id, {'commits': {}, 'refs': {}})
            parent = repo['refs'].get('main')
            merged = {**(repo['commits'][parent] if parent else {}), **files}
            sha = _commit_id(parent, merged, message)
            repo['commits'][sha] = merged
            repo['refs']['main'] = sha
        return sha

    def add_file(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``/files/<name>``; returns its URL."""
        self.static[name] = data
        return f'{self.url}/files/{name}'

    def fault(self, **kwargs) -> Fault:
        f = Fault(**kwargs)
        self.faults.append(f)
        return f

    def _take_fault(self, method: str, path: str) -> Optional[Fault]:
        with self._lock:
            for f in self.faults:
                if f.matches(method, path):
                    if f.times > 0:
                        f.times -= 1
                    return f
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    hub: LoopbackHub = None

    def log_message(self, *args):  # keep pytest output clean
        pass

    # -- helpers -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b'', headers: Optional[Dict[str, str]] = None,
              head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if 'Content-Length' not in (headers or {}):
            self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: Optional[Dict[str, str]] = None, head: bool = False) -> None:
        self._send(status, json.dumps(obj).encode(), {'Content-Type': 'application/json', **(headers or {})}, head)

    def _error(self, status: int, code: Optional[str], msg: str, head: bool, extra=None) -> None:
        headers = {'X-Error-Message': msg, **(extra or {})}
        if code:
            headers['X-Error-Code'] = code
        self._json(status, {'error': msg}, headers, head)

    def _body(self) -> bytes:
        n = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(n) if n else b''

    # -- dispatch ----------------------------------------------------------------------------
    def do_HEAD(self):
        self._get(head=True)

    def do_GET(self):
        self._get(head=False)

    def _get(self, head: bool) -> None:
        path = urlparse(self.path).path
        method = 'HEAD' if head else 'GET'
        self.hub.requests.append((method, path))
        fault = self.hub._take_fault(method, path)
        if fault is not None and fault.status:
            return self._error(fault.status, None, f'injected {fault.status}', head)
        if path.startswith('/files/'):
            data = self.hub.static.get(unquote(path[len('/files/'):]))
            if data is None:
                return self._error(404, None, 'no such file', head)
            return self._serve(data, {}, head, fault)
        parts = path.strip('/').split('/')
        if len(parts) >= 5 and parts[2] == 'resolve':
            repo_id = f'{parts[0]}/{parts[1]}'
            rev, fname = unquote(parts[3]), unquote('/'.join(parts[4:]))
            repo = self.hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, 'RepoNotFound', f'Repository {repo_id} not found', head)
            sha = repo['refs'].get(rev, rev if rev in repo['commits'] else None)
            if sha is None:
                return self._error(404, 'RevisionNotFound', f'Invalid rev id: {rev}', head)
            files = repo['commits'][sha]
            if fname not in files:
                return self._error(404, 'EntryNotFound', f'{fname} does not exist at {sha}', head,
                                   {'X-Repo-Commit': sha})
            data = files[fname]
            return self._serve(data, {'X-Repo-Commit': sha, 'ETag': f'"{hashlib.sha256(data).hexdigest()}"'},
                               head, fault)
        return self._error(404, None, f'not found: {path}', head)

    def _serve(self, data: bytes, headers: Dict[str, str], head: bool, fault: Optional[Fault]) -> None:
        headers = {'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream', **headers}
        status, body = 200, data
        rng = self.headers.get('Range')
        if rng and rng.startswith('bytes=') and not head:
            start = int(rng[len('bytes='):].split('-')[0] or 0)
            body = data[start:]
            status = 206
            headers['Content-Range'] = f'bytes {start}-{len(data) - 1}/{len(data)}'
        if fault is not None and fault.announce_length is not None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header('Content-Length', str(fault.announce_length))
            self.end_headers()
            if not head:
                try:
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client refused the announced size and hung up
            self.close_connection = True
            return
        if head or fault is None:
            return self._send(status, body, headers, head)
        if fault.body is not None:
            return self._send(status, fault.body, headers)
        if fault.tamper:
            body = bytes(b ^ 0xFF for b in body[:64]) + body[64:]
            return self._send(status, body, headers)
        if fault.short_body:
            return self._send(status, body[:len(body) // 2], headers)
        if fault.stall_after is not None or fault.drip is not None:  # full length promised, then slow / silent
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            try:
                if fault.stall_after is not None:
                    self.wfile.write(body[:fault.stall_after])
                    self.wfile.flush()
                    self.hub.stopped.wait()
                else:
                    for i in range(len(body)):
                        if self.hub.stopped.wait(fault.drip):
                            break
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up
            self.close_connection = True
            return
        if fault.truncate_at is not None:  # promise the full length, deliver part, hang up
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body[:fault.truncate_at])
            self.wfile.flush()
            self.close_connection = True
            return
        return self._send(status, body, headers)

    def do_POST(self):
        path = urlparse(self.path).path
        self.hub.requests.append(('POST', path))
        body = self._body()
        fault = self.hub._take_fault('POST', path)
        if fault is not None and fault.status:
            return self._error(fault.status, None, f'injected {fault.status}', False)
        if path == '/api/repos/create':
            req = json.loads(body or b'{}')
            repo_id = f'{req["organization"]}/{req["name"]}' if req.get('organization') else req['name']
            if repo_id not in self.hub.repos:
                self.hub.add_repo(repo_id, {'.gitattributes': b'*.safetensors filter=lfs diff=lfs merge=lfs -text\n'})
            return self._json(200, {'url': f'{self.hub.url}/{repo_id}', 'name': repo_id})
        if path == '/api/validate-yaml':
            import yaml
            content = json.loads(body)['content']
            try:
                if content.startswith('---'):
                    yaml.safe_load(content.split('---')[1])
            except yaml.YAMLError as e:
                return self._json(400, {'errors': [{'message': str(e)}], 'warnings': []})
            return self._json(200, {'errors': [], 'warnings': []})
        parts = path.strip('/').split('/')
        if len(parts) == 6 and parts[:2] == ['api', 'models'] and parts[4] in ('preupload', 'commit'):
            repo_id, rev = f'{parts[2]}/{parts[3]}', unquote(parts[5])
            if repo_id not in self.hub.repos:
                return self._error(404, 'RepoNotFound', f'Repository {repo_id} not found', False)
            if parts[4] == 'preupload':
                files = json.loads(body)['files']
                return self._json(200, {'files': [{'path': f['path'], 'uploadMode': 'regular', 'shouldIgnore': False}
                                                  for f in files]})
            header, added = {}, {}
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item['key'] == 'header':
                    header = item['value']
                elif item['key'] == 'file':
                    added[item['value']['path']] = base64.b64decode(item['value']['content'])
                else:
                    return self._error(400, None, f'loopback hub: unsupported commit operation {item["key"]}', False)
            self.hub.commits.append({'repo_id': repo_id, 'revision': rev, 'header': header, 'files': sorted(added)})
            sha = self.hub.add_repo(repo_id, added, header.get('summary', ''))
            return self._json(200, {'commitUrl': f'{self.hub.url}/{repo_id}/commit/{sha}', 'commitOid': sha,
                                    'pullRequestUrl': None})
        return self._error(404, None, f'not found: {path}', False)


class StallServer:
    """A raw TCP server on 127.0.0.1 for hang tests: ``mode='silent'`` accepts and never answers;
    ``'headers'`` answers ``200`` with a ``Content-Length`` of ``length`` and ``send`` body bytes, then
    stalls; ``'drip_headers'`` sends a status line, then a header byte every 0.1 s without end.
    Connections are held until :meth:`stop` (bounded: at most 64 held)."""

    def __init__(self, mode: str = 'silent', length: int = 1 << 20, send: int = 10):
        import socket
        self.mode, self.length, self.send = mode, length, send
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.conns = []
        self.accepted = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name='stall-server', daemon=True)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f'http://{host}:{port}'

    def _serve(self):
        import socket
        while not self._stop.is_set() and len(self.conns) < 64:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            self.conns.append(conn)
            if self.mode == 'drip_headers':  # a status line, then header bytes one every 0.1 s, never ending
                threading.Thread(target=self._drip_headers, args=(conn,), daemon=True).start()
            if self.mode == 'headers':
                conn.settimeout(1.0)
                try:
                    conn.recv(65536)
                    head = (f'HTTP/1.1 200 OK\r\nContent-Length: {self.length}\r\n'
                            'Content-Type: application/octet-stream\r\n\r\n').encode()
                    conn.sendall(head + b'\0' * self.send)
                except OSError:
                    pass

    def _drip_headers(self, conn):
        try:
            conn.sendall(b'HTTP/1.1 200 OK\r\n')
            while not self._stop.wait(0.1):
                conn.sendall(b'X')
        except OSError:
            pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()
