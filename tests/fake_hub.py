"""A local stand-in for the Hugging Face Hub: just the HTTP that `edalle models download` uses.

No test may touch the network, yet the download path is only worth testing against the real
protocol `huggingface_hub` speaks, so this serves it from 127.0.0.1 (point `HF_ENDPOINT` here):

- `HEAD /{repo}/resolve/{revision}/{file}`: what `get_hf_file_metadata` reads. Small (git) files
  answer 200 with `ETag` = git blob id; LFS files answer 302 to `/lfs/{sha256}` with
  `X-Linked-Etag` = SHA-256 and `X-Linked-Size`, as the hub does before its CDN. Every answer
  carries `X-Repo-Commit` (the client refuses a server without it). The redirect names the same
  server as `localhost` rather than 127.0.0.1: a different host, like the hub's CDN, so the
  client reads the metadata off the 302 instead of following it. No `X-Xet-*` headers: the
  fake is a plain-HTTP hub, so no client ever takes the Xet path.
- `GET` of either URL: the bytes, honouring `Range: bytes=N-` with 206 and `Content-Range`.
- `POST /api/models/{repo}/paths-info/{revision}` (form-encoded `paths`): the JSON the hub's
  paths-info API returns, with `lfs.oid` = SHA-256 for LFS files.

Faults for the tests: `drop_after` closes the connection mid-body once, `stall_after` sends part
of a body and then waits (so a test can kill the client mid-file), and `served` makes a file's
bytes differ from the hashes the hub advertises. Every request is recorded in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

MAIN_COMMIT = 'c0ffee0000000000000000000000000000000001'
_RESOLVE = re.compile(r'^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$')
_LFS = re.compile(r'^/lfs/(?P<sha256>[0-9a-f]{64})$')
_PATHS_INFO = re.compile(r'^/api/models/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<revision>[^/]+)$')
_COMMIT = re.compile(r'^[0-9a-f]{40}$')


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(content) + content).hexdigest()


@dataclass
class FakeFile:
    content: bytes  # what the hub's hashes and sizes describe
    lfs: bool
    served: bytes | None = None  # what actually goes over the wire, when a test wants it to differ

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def body(self) -> bytes:
        return self.content if self.served is None else self.served


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    range: str | None


@dataclass
class _Fault:
    after: int
    release: threading.Event | None = None  # None: drop the connection; set: stall until released
    reached: threading.Event = field(default_factory=threading.Event)


class FakeHub:
    """Files by (repo_id, filename), the faults to inject, and the log of what clients asked."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], FakeFile] = {}
        self.requests: list[SeenRequest] = []
        self._faults: dict[str, _Fault] = {}  # by LFS sha256 or git blob id, one-shot
        self._lock = threading.Lock()
        self.url = ''  # the hub, http://127.0.0.1:PORT
        self.cdn_url = ''  # where LFS files redirect: the same server as http://localhost:PORT

    def add(self, repo_id: str, filename: str, content: bytes, *, lfs: bool | None = None) -> FakeFile:
        """Serve a file; anything over 10 KB is stored in LFS, as the hub's default rules would have it."""
        fake = FakeFile(content, len(content) > 10_000 if lfs is None else lfs)
        self.files[repo_id, filename] = fake
        return fake

    def drop_after(self, fake: FakeFile, n: int) -> threading.Event:
        """Close the connection after `n` body bytes of the next GET of this file; returns 'it happened'."""
        fault = _Fault(n)
        self._faults[self._key(fake)] = fault
        return fault.reached

    def stall_after(self, fake: FakeFile, n: int, release: threading.Event) -> threading.Event:
        """Send `n` body bytes of the next GET of this file, then hang until `release` is set."""
        fault = _Fault(n, release)
        self._faults[self._key(fake)] = fault
        return fault.reached

    def gets(self, fake: FakeFile) -> list[SeenRequest]:
        """The body requests (GET) made for one file, in order: to its LFS blob or its resolve URL."""
        found = []
        for seen in self.requests:
            if seen.method != 'GET':
                continue
            if fake.lfs and seen.path == f'/lfs/{fake.sha256}':
                found.append(seen)
            elif not fake.lfs and (m := _RESOLVE.match(seen.path)):
                if self.files.get((unquote(m['repo']), unquote(m['filename']))) is fake:
                    found.append(seen)
        return found

    @staticmethod
    def _key(fake: FakeFile) -> str:
        return fake.sha256 if fake.lfs else git_blob_id(fake.content)

    # -------------------------------------------------------------------- HTTP

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split('?', 1)[0]
        with self._lock:
            self.requests.append(SeenRequest(handler.command, path, handler.headers.get('Range')))
        if handler.command == 'POST' and (m := _PATHS_INFO.match(path)):
            return self._paths_info(handler, unquote(m['repo']), unquote(m['revision']))
        if handler.command in ('GET', 'HEAD') and (m := _RESOLVE.match(path)):
            return self._resolve(handler, unquote(m['repo']), unquote(m['revision']), unquote(m['filename']))
        if handler.command in ('GET', 'HEAD') and (m := _LFS.match(path)):
            fake = next((f for f in self.files.values() if f.lfs and f.sha256 == m['sha256']), None)
            if fake is not None:
                return self._send_body(handler, fake, {'ETag': f'"{fake.sha256}"'})
        return self._not_found(handler, 'EntryNotFound')

    def _resolve(self, handler: BaseHTTPRequestHandler, repo_id: str, revision: str, filename: str) -> None:
        fake = self.files.get((repo_id, filename))
        if fake is None:
            return self._not_found(handler, 'EntryNotFound')
        commit = revision if _COMMIT.match(revision) else MAIN_COMMIT
        if fake.lfs:
            handler.send_response(302)
            handler.send_header('Location', f'{self.cdn_url}/lfs/{fake.sha256}')
            handler.send_header('X-Repo-Commit', commit)
            handler.send_header('X-Linked-Etag', f'"{fake.sha256}"')
            handler.send_header('X-Linked-Size', str(len(fake.content)))
            handler.send_header('ETag', '"not-the-linked-etag"')
            handler.send_header('Content-Length', '0')
            handler.end_headers()
            return None
        return self._send_body(handler, fake, {'X-Repo-Commit': commit, 'ETag': f'"{git_blob_id(fake.content)}"'})

    def _send_body(self, handler: BaseHTTPRequestHandler, fake: FakeFile, headers: dict[str, str]) -> None:
        body = fake.body
        start = 0
        if (requested := handler.headers.get('Range')) and (m := re.fullmatch(r'bytes=(\d+)-', requested.strip())):
            start = int(m[1])
        part = body[start:]
        handler.send_response(206 if start else 200)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header('Accept-Ranges', 'bytes')
        handler.send_header('Content-Length', str(len(part)))
        if start:
            handler.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
        handler.end_headers()
        if handler.command == 'HEAD':
            return
        fault = self._faults.pop(self._key(fake), None) if handler.command == 'GET' else None
        if fault is None:
            handler.wfile.write(part)
            return
        handler.wfile.write(part[: fault.after])
        handler.wfile.flush()
        fault.reached.set()
        if fault.release is not None:
            fault.release.wait(timeout=30)
        handler.close_connection = True  # the client sees a body shorter than Content-Length

    def _paths_info(self, handler: BaseHTTPRequestHandler, repo_id: str, revision: str) -> None:
        length = int(handler.headers.get('Content-Length') or 0)
        form = parse_qs(handler.rfile.read(length).decode())
        entries = []
        for filename in form.get('paths', []):
            fake = self.files.get((repo_id, filename))
            if fake is None:
                continue
            entry: dict[str, object] = {'type': 'file', 'path': filename, 'size': len(fake.content)}
            entry['oid'] = git_blob_id(fake.content)
            if fake.lfs:
                entry['oid'] = git_blob_id(b'version https://git-lfs.github.com/spec/v1\n')  # a pointer's blob id
                entry['lfs'] = {'oid': fake.sha256, 'size': len(fake.content), 'pointerSize': 134}
            entries.append(entry)
        data = json.dumps(entries).encode()
        handler.send_response(200)
        handler.send_header('Content-Type', 'application/json')
        handler.send_header('X-Repo-Commit', revision if _COMMIT.match(revision) else MAIN_COMMIT)
        handler.send_header('Content-Length', str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _not_found(handler: BaseHTTPRequestHandler, code: str) -> None:
        data = json.dumps({'error': code}).encode()
        handler.send_response(404)
        handler.send_header('X-Error-Code', code)
        handler.send_header('Content-Type', 'application/json')
        handler.send_header('Content-Length', str(len(data)))
        handler.end_headers()
        if handler.command != 'HEAD':
            handler.wfile.write(data)


def mini_preset_files(big: int = 300_000) -> dict[tuple[str, str], bytes]:
    """Every file of the mini preset, as seeded random bytes: small text files in git, weights in LFS.

    Right names and hashes, wrong contents: enough for downloading, resuming and verifying by hash,
    not for loading into a model.
    """
    from edalle.presets import get_preset

    rng = random.Random(1)
    files = {}
    for component in get_preset('mini').components:
        for hub_file in component.files:
            name = hub_file.filename
            if name == 'config.json':
                content = json.dumps({'repo': hub_file.repo_id, 'seed': rng.random()}).encode()
            elif name.endswith(('.msgpack', '.safetensors')):
                content = rng.randbytes(big + rng.randrange(1000))
            else:
                content = rng.randbytes(2_000)
            files[hub_file.repo_id, name] = content
    return files


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Run the hub on an ephemeral port of 127.0.0.1 in a thread; `hub.url` is its `HF_ENDPOINT`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'  # keep-alive and Content-Length framing, as httpx expects of the hub

        def do_GET(self) -> None:
            hub._handle(self)

        do_HEAD = do_POST = do_GET

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet: pytest shows failures
            pass

    server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    server.daemon_threads = True
    hub.url = f'http://127.0.0.1:{server.server_address[1]}'
    hub.cdn_url = f'http://localhost:{server.server_address[1]}'
    thread = threading.Thread(target=server.serve_forever, name='fake-hub', daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
