"""A loopback stand-in for the Hugging Face Hub, serving just the HTTP API that `huggingface_hub` (2.x)
downloads use, so `snapshot_download` and `hf_hub_download` run their real code in the tests.

Endpoints (``{type}`` is ``models`` or ``datasets``; a revision is the branch ``main`` or the repo's commit sha):

- ``GET /api/{type}/{owner}/{name}/revision/{rev}``: repo info, ``{"id", "sha"}``. `snapshot_download`
  calls it to turn a branch into the commit it then pins every file download to.
- ``GET /api/{type}/{owner}/{name}/tree/{rev}[/{folder}]?recursive=true``: the file listing
  `snapshot_download` filters with ``allow_patterns``. One page (no ``Link`` header), folders included as
  ``"type": "directory"`` entries as on the Hub.
- ``HEAD`` and ``GET /[datasets/]{owner}/{name}/resolve/{rev}/{path}``: the HEAD gives the metadata
  `hf_hub_download` requires before it downloads (``X-Repo-Commit``, ``ETag``, ``Content-Length``), the GET
  the bytes. Files are served directly, like small git files on the Hub, with the git blob id as ETag.

Errors carry the headers `huggingface_hub.utils.hf_raise_for_status` maps to its exceptions, as the real Hub
answers a client without a token: an unknown repo is ``401`` + ``X-Error-Code: RepoNotFound`` (the Hub does
not tell a missing repo from a private one), an unknown revision ``404`` + ``RevisionNotFound``, an unknown
file ``404`` + ``EntryNotFound`` (with ``X-Repo-Commit``, which the client uses to cache the absence).

Nothing advertises Xet storage (no ``X-Xet-Hash`` header, no ``xetHash`` in the tree), so a client with
``hf_xet`` installed still downloads over plain HTTP from ``resolve``. ``Range`` requests are not served:
the client sends them only to resume a download that broke mid-stream.

Every request is recorded in :attr:`FakeHub.requests` so tests can check what was, and was not, fetched.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

BRANCH = "main"


@dataclass(frozen=True)
class Request:
    method: str
    path: str            # URL path, percent-decoded, without the query
    authorized: bool     # an Authorization header was sent


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _blob_id(data: bytes) -> str:
    """The git blob id of `data`, which the Hub gives as a small file's oid and ETag."""
    return _sha1(b"blob %d\0" % len(data) + data)


class FakeHub:
    """A Hub holding `repos`: ``{(repo_type, repo_id): {path: bytes}}`` with repo_type ``model`` or ``dataset``.

    Use as a context manager; :attr:`url` is what ``HF_ENDPOINT`` must be set to.
    """

    def __init__(self, repos: dict[tuple[str, str], dict[str, bytes]]):
        self.repos = repos
        self.requests: list[Request] = []
        self._lock = threading.Lock()  # handler threads append concurrently (snapshot_download uses a pool)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        # A short poll: `shutdown` waits for the serving loop to look at its stop flag.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def commit(self, repo_type: str, repo_id: str) -> str:
        """The (only) commit of a repo: a fixed 40-hex sha, so the client treats it as a commit hash."""
        return _sha1(f"{repo_type}/{repo_id}".encode())

    def resolved(self, method: str) -> list[str]:
        """Repo paths of the ``resolve`` requests made with `method` (HEAD or GET), in arrival order."""
        return [r.path.split("/resolve/", 1)[1].split("/", 1)[1] for r in self.requests
                if r.method == method and "/resolve/" in r.path]

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket: from now on a client gets "connection refused", as from a Hub it
        cannot reach. Stopping twice is harmless."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one connection per request, so shutting the server down leaves no idle keep-alive thread.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the record in FakeHub.requests replaces it
        pass

    def _route(self, head: bool) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        # Split before decoding: the client quotes a revision with safe="" (refs/pr/1 -> refs%2Fpr%2F1).
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        hub.record(Request(self.command, "/".join([""] + parts), "Authorization" in self.headers))
        if len(parts) >= 6 and parts[0] == "api" and parts[1] in ("models", "datasets") \
                and parts[4] in ("revision", "tree"):
            recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() in ("true", "1")
            self._api(hub, parts[1][:-1], "/".join(parts[2:4]), parts[4], parts[5], "/".join(parts[6:]),
                      recursive, head)
        elif parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
            self._resolve(hub, "dataset", "/".join(parts[1:3]), parts[4], "/".join(parts[5:]), head)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(hub, "model", "/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        else:
            self._error(404, None, "Not Found", head)

    def _api(self, hub: FakeHub, repo_type: str, repo_id: str, action: str, rev: str, folder: str,
             recursive: bool, head: bool) -> None:
        if (found := self._find(hub, repo_type, repo_id, rev, head)) is None:
            return
        files, commit = found
        if action == "revision":
            body: object = {"id": repo_id, "sha": commit}
        else:
            body = _tree(files, folder, recursive)
            if folder and not body:
                return self._error(404, "EntryNotFound", f"{folder} does not exist", head, commit)
        self._send(200, json.dumps(body).encode(), head, {"Content-Type": "application/json"})

    def _resolve(self, hub: FakeHub, repo_type: str, repo_id: str, rev: str, path: str, head: bool) -> None:
        if (found := self._find(hub, repo_type, repo_id, rev, head)) is None:
            return
        files, commit = found
        if path not in files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", head, commit)
        data = files[path]
        self._send(200, data, head, {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit,
                                     "ETag": f'"{_blob_id(data)}"'})

    def _find(self, hub: FakeHub, repo_type: str, repo_id: str, rev: str,
              head: bool) -> tuple[dict[str, bytes], str] | None:
        """The files and commit of a repo at `rev`, or None once the Hub's error has been sent."""
        files = hub.repos.get((repo_type, repo_id))
        if files is None:
            # Anonymous clients get 401 from the Hub for a missing repo; authenticated ones 404.
            status = 404 if "Authorization" in self.headers else 401
            self._error(status, "RepoNotFound", "Repository not found", head)
            return None
        commit = hub.commit(repo_type, repo_id)
        if rev not in (BRANCH, commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            return None
        return files, commit

    def _error(self, status: int, code: str | None, message: str, head: bool, commit: str | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code is not None:
            headers["X-Error-Code"] = code
        if commit is not None:
            headers["X-Repo-Commit"] = commit
        self._send(status, json.dumps({"error": message}).encode(), head, headers)

    def _send(self, status: int, body: bytes, head: bool, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        # A HEAD answer carries the length of the body it omits: that is the file size the client expects.
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _tree(files: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
    """The Hub's tree entries under `folder`: its children, or with `recursive` everything below it."""
    prefix = f"{folder}/" if folder else ""
    entries: dict[str, dict] = {}
    for path, data in sorted(files.items()):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            sub = prefix + "/".join(parts[:depth])
            entries[sub] = {"type": "directory", "oid": _sha1(sub.encode()), "size": 0, "path": sub}
        if recursive or len(parts) == 1:
            entries[path] = {"type": "file", "oid": _blob_id(data), "size": len(data), "path": path}
    return list(entries.values())
