"""A fake Hugging Face Hub on 127.0.0.1 for hubvram's tests (stdlib only; never touches the network).

Quick start::

    from fakehub import FakeHub, build_safetensors_header, status

    with FakeHub() as hub:                      # or use the ``fakehub`` pytest fixture (tests/conftest.py)
        sha = hub.add_repo("org/m", {"config.json": b'{"model_type": "llama"}'})
        header, data_len = build_safetensors_header({"w": ("BF16", (4096, 4096))})
        hub.add_safetensors("org/m", "model.safetensors", header, data_len)   # 32 MiB, never materialised
        hub.url("org/m", "config.json")         # http://127.0.0.1:PORT/org/m/resolve/main/config.json
        hub.inject("/org/m/resolve/*", status(503), times=2)
        hub.requests[-1].range, hub.requests[-1].authorization, hub.requests[-1].status

API (signatures)
----------------
FakeHub(*, cdn_separate_port=False, cdn_host=None, host="127.0.0.1", latency=0.0, cdn_url_ttl=3600)
    .start() -> self / .stop() (= .close()); context manager. Servers run in daemon threads and are joined,
    with every open keep-alive connection, on stop.
    .endpoint        "http://127.0.0.1:PORT"  (pass as HF endpoint)
    .cdn_endpoint    where signed CDN URLs point: same server unless cdn_separate_port=True (second server,
                     another port) and/or cdn_host="localhost" (another host name for the same address).
    .latency         seconds added to every request (settable at any time)
    .cdn_url_ttl     lifetime of signed CDN URLs in seconds (negative -> already expired)
    .requests        RequestLog (thread-safe; list-like; .clear(), .filter(method=, path_glob=, server=, status=))
                     of RequestRecord(method, path, query, headers, server "hub"|"cdn", port, status, fault, time)
                     with .range / .authorization / .target; status is None when the connection was reset.
                     A record is logged (and its status set) before the response is written.
    .server_errors   list of tracebacks of unexpected exceptions in handlers (tests may assert it is empty)
    .add_repo(repo_id, files, revision_sha=None, branch="main", gated=False, private=False, token=None,
              lfs_patterns=LFS_PATTERNS) -> sha
        files: {path: bytes | str | VirtualSafetensors}. A repeated call adds a commit / branch to the repo;
        gated/private/token are then replaced by the latest call's values. gated: False | True | "auto" | "manual".
        token defaults to DEFAULT_TOKEN for gated/private repos.
    .add_file(repo_id, filename, content, branch="main") -> sha          (adds to the branch's commit in place)
    .add_safetensors(repo_id, filename, header_bytes, data_len, branch="main") -> sha
        serves the virtual file u64le(len(header_bytes)) + header_bytes + data_len zero bytes, lazily.
    .inject(path_glob, fault, times=1, *, method=None, server=None) -> Injection   (times=None: unlimited)
    .clear_faults()
    .url(repo_id, filename, revision="main")  (== huggingface_hub.hf_hub_url(..., endpoint=hub.endpoint))
    .api_url(repo_id, revision=None), .cdn_path(repo_id, filename, revision="main"), .cdn_url(...), .sha(repo_id, revision)

Faults (module functions; path_glob is an fnmatch pattern, ``*`` spans ``/``, matched against the request path
without the query, both percent-encoded and decoded; the first live matching injection is used and counted):
    status(code, retry_after=None, error_code=None, message=None, headers=None)   e.g. status(429, retry_after=1)
    slow_first_byte(seconds)  nothing is sent for `seconds`, then the normal response
    latency(seconds)          same delay, named as latency (hub.latency applies one to every request)
    truncate(after_bytes)     normal headers (full Content-Length) then only `after_bytes` of body, then close
    wrong_content_range(mode="shift"|"total"|"missing")  206 whose Content-Range lies (only Range requests match)
    ignore_range()            200 + full body although a Range was sent (only Range requests match)
    redirect_loop()           302 to the same path (+ a marker query); the loop lasts for the whole client chain
                              and counts as one use
    reset()                   the connection is closed (TCP RST) without any response

Helpers:
    build_safetensors_header(tensors: {name: (dtype, shape)}, metadata=None) -> (header_bytes, data_len)
        byte-identical to the safetensors library's header (incl. space padding to 8 bytes); dtype as in the file
        ("BF16", "F8_E4M3", ...) or a torch/numpy name ("bfloat16", "float8_e4m3fn", ...). Metadata keys are
        written in the dict's order (the library uses a HashMap: same bytes only for <= 1 key).
    VirtualSafetensors(header_bytes, data_len) - the lazily served file; .size, .read(start, stop)
    repo_from_snapshot(snapshot_dir, tensors=None, *, include=("config.json", "model.safetensors.index.json"),
                       metadata={"format": "pt"}, strict=True) -> files dict for add_repo
        copies the snapshot's files verbatim and, if tensors are given, splits them into the shards named by
        model.safetensors.index.json (or one model.safetensors). strict: every tensor must be in the index and
        vice versa (strict=False: unknown tensors go to the last shard, index entries without a tensor are dropped).
        The index's total_size is not rewritten.

Routes (as huggingface.co, paths as huggingface_hub builds them; revisions may be branches or 40-hex shas,
"refs/pr/1" arrives percent-encoded):
    GET /api/models/{repo_id}[/revision/{rev}][?blobs=true]  model info JSON (id, sha, siblings, private, gated,
        config{architectures, model_type}, safetensors{parameters, total} computed from the served headers)
    GET /api/models/{repo_id}/tree/{rev}[/{path}][?recursive=true]
    GET|HEAD /{repo_id}/resolve/{rev}/{filename}
        non-LFS: 200 + body, ETag (git blob sha1), X-Repo-Commit, Range/304 honoured
        LFS (*.safetensors, *.bin, ... or virtual): 302 Location=signed CDN URL, X-Repo-Commit, X-Linked-Etag
        (sha256; a pseudo sha256 for virtual files), X-Linked-Size
    GET|HEAD /cdn/{oid}?X-Amz-Signature=..&Expires=..   bytes with Range (206/416), ETag, Accept-Ranges, 304;
        Authorization is neither required nor checked (but is logged); bad/expired signature -> 403 (S3 XML).
    Errors: unknown repo 404 RepoNotFound; unknown revision 404 RevisionNotFound; missing file 404 EntryNotFound
    (+X-Repo-Commit); gated without token 401 GatedRepo, gated with a wrong token 403 GatedRepo (as the Hub:
    "not in the authorized list"); private without/with a wrong token 401 RepoNotFound (files and API).
    Every error has X-Error-Message and JSON {"error": message}. Model info of a gated repo is public (as on the Hub).

Note: with the default same-port CDN, clients that follow same-origin redirects (huggingface_hub's HEAD metadata
call) end up on the CDN response, which has no X-Repo-Commit - use cdn_separate_port=True for huggingface_hub.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import http.server
import itertools
import json
import math
import re
import secrets
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union
from urllib.parse import parse_qs, quote, unquote

__all__ = [
    "DEFAULT_TOKEN",
    "LFS_PATTERNS",
    "FakeHub",
    "Fault",
    "Headers",
    "Injection",
    "RequestLog",
    "RequestRecord",
    "VirtualSafetensors",
    "build_safetensors_header",
    "ignore_range",
    "latency",
    "redirect_loop",
    "repo_from_snapshot",
    "reset",
    "slow_first_byte",
    "status",
    "truncate",
    "wrong_content_range",
]

DEFAULT_TOKEN = "hf_fakehub_token"

# Default .gitattributes of a Hub model repo (the patterns that matter here).
LFS_PATTERNS: tuple[str, ...] = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.ot", "*.pb",
    "*.pkl", "*.pickle", "*.npy", "*.npz", "*.gguf", "*.model", "*.tflite", "*.tar.*", "*.zip", "*.gz",
    "*.zst", "*.xz", "*.7z", "*.arrow", "*.parquet", "*tfevents*",
)
_LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # larger files are LFS whatever their name

_CHUNK = 1 << 20
_ZEROS = memoryview(bytes(_CHUNK))
_FIXED_DATE = "2024-01-01T00:00:00.000Z"


# --------------------------------------------------------------------------------------------------------------
# safetensors header builder
# --------------------------------------------------------------------------------------------------------------

# Safetensors dtype code -> bits per element; the order is the Rust `Dtype` enum order, which (descending) is the
# order in which the library lays tensors out (ties broken by name).
_DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
    "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
_DTYPE_RANK = {code: i for i, code in enumerate(_DTYPE_BITS)}
_DTYPE_ALIASES = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16", "int32": "I32",
    "uint32": "U32", "int64": "I64", "uint64": "U64", "float16": "F16", "half": "F16", "bfloat16": "BF16",
    "float32": "F32", "float": "F32", "float64": "F64", "double": "F64", "complex64": "C64",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ", "float4_e2m1fn_x2": "F4",
}


def _dtype_code(dtype: Any) -> str:
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch."):]
    if name in _DTYPE_BITS:
        return name
    if name in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[name]
    raise ValueError(f"unknown safetensors dtype {dtype!r}")


def _json_str(s: str) -> str:
    # serde_json and Python agree byte-for-byte with ensure_ascii=False (only ", \\ and C0 controls escaped).
    return json.dumps(s, ensure_ascii=False)


def build_safetensors_header(
    tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, int]:
    """Return ``(header_bytes, data_len)`` exactly as the safetensors library writes them.

    ``header_bytes`` is the JSON header including the trailing space padding to a multiple of 8 bytes (the
    file starts with ``struct.pack("<Q", len(header_bytes))``); ``data_len`` is the size of the data section.
    ``tensors`` maps names to ``(dtype, shape)`` (or ``{"dtype": .., "shape": ..}``). No tensor data is allocated.
    """
    entries = []
    for name, spec in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor name must be str, got {name!r}")
        if isinstance(spec, Mapping):
            dtype, shape = spec["dtype"], spec["shape"]
        else:
            dtype, shape = spec
        code = _dtype_code(dtype)
        dims = [int(d) for d in shape]
        if any(d < 0 for d in dims):
            raise ValueError(f"negative dimension in {name!r}: {dims}")
        bits = math.prod(dims) * _DTYPE_BITS[code]
        if bits % 8:
            raise ValueError(f"{name!r}: {code} tensor of shape {dims} does not fill whole bytes")
        entries.append((name, code, dims, bits // 8))
    # descending dtype (enum order), then name (Rust String order == code point order)
    entries.sort(key=lambda e: (-_DTYPE_RANK[e[1]], e[0]))

    parts = []
    if metadata is not None:
        items = []
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("safetensors metadata must map str to str")
            items.append(f"{_json_str(k)}:{_json_str(v)}")
        parts.append('"__metadata__":{' + ",".join(items) + "}")
    offset = 0
    for name, code, dims, nbytes in entries:
        parts.append(
            f'{_json_str(name)}:{{"dtype":"{code}","shape":[{",".join(map(str, dims))}],'
            f'"data_offsets":[{offset},{offset + nbytes}]}}'
        )
        offset += nbytes
    header = ("{" + ",".join(parts) + "}").encode("utf-8")
    header += b" " * ((8 - len(header) % 8) % 8)
    return header, offset


# --------------------------------------------------------------------------------------------------------------
# blobs
# --------------------------------------------------------------------------------------------------------------


class _Blob:
    size: int

    def iter_bytes(self, start: int, stop: int) -> Iterator[memoryview | bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, start: int = 0, stop: int | None = None) -> bytes:
        stop = self.size if stop is None else min(stop, self.size)
        return b"".join(bytes(c) for c in self.iter_bytes(max(0, start), stop)) if stop > start else b""

    def head(self, n: int) -> bytes:
        return self.read(0, n)


class _BytesBlob(_Blob):
    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.size = len(self.data)
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.data).hexdigest()
        return self._sha256

    def iter_bytes(self, start, stop):
        view = memoryview(self.data)
        for pos in range(start, stop, _CHUNK):
            yield view[pos:min(stop, pos + _CHUNK)]


class VirtualSafetensors(_Blob):
    """``u64le(len(header_bytes)) + header_bytes + data_len zero bytes``, generated lazily for any range."""

    def __init__(self, header_bytes: bytes | str, data_len: int):
        if isinstance(header_bytes, str):
            header_bytes = header_bytes.encode("utf-8")
        if data_len < 0:
            raise ValueError("data_len must be >= 0")
        self.header_bytes = bytes(header_bytes)
        self.data_len = int(data_len)
        self._head = struct.pack("<Q", len(self.header_bytes)) + self.header_bytes
        self.size = len(self._head) + self.data_len
        # Not the sha256 of the content (that would need hashing data_len zeros): stable and unique instead.
        self.sha256 = hashlib.sha256(b"fakehub-virtual\0" + self._head + str(self.data_len).encode()).hexdigest()

    def iter_bytes(self, start, stop):
        head_len = len(self._head)
        if start < head_len:
            yield self._head[start:min(stop, head_len)]
            start = head_len
        while start < stop:
            n = min(_CHUNK, stop - start)
            yield _ZEROS[:n]
            start += n

    def __repr__(self) -> str:
        return f"VirtualSafetensors(header={len(self.header_bytes)} B, data_len={self.data_len})"


FileContent = Union[bytes, bytearray, str, VirtualSafetensors]


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _File:
    path: str
    blob: _Blob
    lfs: bool
    _git_oid: str | None = None

    @property
    def size(self) -> int:
        return self.blob.size

    @property
    def sha256(self) -> str:
        return self.blob.sha256  # type: ignore[attr-defined]

    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n").encode()

    @property
    def git_oid(self) -> str:
        if self._git_oid is None:
            self._git_oid = _git_blob_sha1(self.pointer() if self.lfs else self.blob.data)  # type: ignore
        return self._git_oid

    def safetensors_header(self) -> dict | None:
        try:
            if isinstance(self.blob, VirtualSafetensors):
                raw = self.blob.header_bytes
            else:
                (n,) = struct.unpack("<Q", self.blob.head(8))
                raw = self.blob.read(8, 8 + n)
            header = json.loads(raw)
            return header if isinstance(header, dict) else None
        except Exception:
            return None


@dataclass
class _Repo:
    repo_id: str
    gated: Any = False
    private: bool = False
    token: str | None = None
    default_branch: str = "main"
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.commits:
            return revision
        return None


# --------------------------------------------------------------------------------------------------------------
# request log
# --------------------------------------------------------------------------------------------------------------


class Headers(Mapping):
    """Read-only, case-insensitive view of request headers (first value wins for duplicates)."""

    def __init__(self, items: Iterable[tuple[str, str]]):
        self._items = list(items)
        self._map: dict[str, str] = {}
        for k, v in self._items:
            self._map.setdefault(k.lower(), v)

    def __getitem__(self, key: str) -> str:
        return self._map[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def __iter__(self):
        return iter(k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, default=None):
        return self._map.get(key.lower(), default)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass
class RequestRecord:
    method: str
    path: str  # as sent (percent-encoded), without the query
    query: str
    headers: Headers
    server: str  # "hub" or "cdn"
    port: int
    status: int | None = None  # None: no response was sent (reset)
    fault: str | None = None
    time: float = field(default_factory=time.time)

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


class RequestLog:
    """Thread-safe, list-like log of RequestRecord (indexing and iteration work on a snapshot)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RequestRecord] = []

    def _append(self, rec: RequestRecord) -> None:
        with self._lock:
            self._items.append(rec)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self):
        return iter(self.snapshot())

    def __getitem__(self, index):
        return self.snapshot()[index]

    def filter(self, method: str | None = None, path_glob: str | None = None, server: str | None = None,
               status: int | None = None) -> list[RequestRecord]:
        out = []
        for r in self.snapshot():
            if method is not None and r.method != method.upper():
                continue
            if server is not None and r.server != server:
                continue
            if status is not None and r.status != status:
                continue
            if path_glob is not None and not (fnmatch.fnmatchcase(r.path, path_glob)
                                              or fnmatch.fnmatchcase(unquote(r.path), path_glob)):
                continue
            out.append(r)
        return out

    def __repr__(self) -> str:
        return f"RequestLog({[f'{r.method} {r.target} -> {r.status}' for r in self.snapshot()]!r})"


# --------------------------------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    kind: str
    params: tuple = ()
    requires_range: bool = False

    def param(self, name: str, default=None):
        return dict(self.params).get(name, default)


def status(code: int, retry_after: float | int | None = None, error_code: str | None = None,
           message: str | None = None, headers: Mapping[str, str] | None = None) -> Fault:
    """Answer with HTTP ``code`` (JSON ``{"error": message}``), optionally with Retry-After / X-Error-Code."""
    return Fault("status", (("code", int(code)), ("retry_after", retry_after), ("error_code", error_code),
                            ("message", message), ("headers", tuple((headers or {}).items()))))


def slow_first_byte(seconds: float) -> Fault:
    return Fault("slow_first_byte", (("seconds", float(seconds)),))


def latency(seconds: float) -> Fault:
    return Fault("latency", (("seconds", float(seconds)),))


def truncate(after_bytes: int) -> Fault:
    return Fault("truncate", (("after_bytes", int(after_bytes)),))


def wrong_content_range(mode: str = "shift") -> Fault:
    if mode not in ("shift", "total", "missing"):
        raise ValueError("mode must be 'shift', 'total' or 'missing'")
    return Fault("wrong_content_range", (("mode", mode),), requires_range=True)


def ignore_range() -> Fault:
    return Fault("ignore_range", requires_range=True)


def redirect_loop() -> Fault:
    return Fault("redirect_loop")


def reset() -> Fault:
    return Fault("reset")


@dataclass
class Injection:
    id: int
    path_glob: str
    fault: Fault
    remaining: int | None  # None = unlimited
    method: str | None = None
    server: str | None = None
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def _matches(self, method: str, path: str, server: str, has_range: bool) -> bool:
        if self.exhausted:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.server is not None and self.server != server:
            return False
        if self.fault.requires_range and not has_range:
            return False
        return fnmatch.fnmatchcase(path, self.path_glob) or fnmatch.fnmatchcase(unquote(path), self.path_glob)


_LOOP_PARAM = "__fakehub_loop"


# --------------------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------------------

_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def _parse_range(value: str, total: int):
    """None -> ignore the header (serve 200); "unsatisfiable"; or (start, stop) with stop exclusive."""
    m = _RANGE_RE.fullmatch(value)
    if not m:
        return None  # malformed or multi-range: served whole, as S3/CloudFront do for multi-range
    a, b = m.groups()
    if a == "" and b == "":
        return None
    if a == "":
        n = int(b)
        if n == 0 or total == 0:
            return "unsatisfiable"
        return max(0, total - n), total
    start = int(a)
    if b != "" and int(b) < start:
        return None
    if start >= total:
        return "unsatisfiable"
    stop = total if b == "" else min(total, int(b) + 1)
    return start, stop


def _etag_matches(if_none_match: str, etag: str) -> bool:
    want = etag.strip().removeprefix("W/")
    for candidate in if_none_match.split(","):
        c = candidate.strip()
        if c == "*" or c.removeprefix("W/") == want:
            return True
    return False


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _split_repo(segs: list[str], keywords: set[str]) -> tuple[str, list[str]]:
    if len(segs) >= 2 and segs[1] not in keywords:
        return f"{unquote(segs[0])}/{unquote(segs[1])}", segs[2:]
    return unquote(segs[0]), segs[1:]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are dropped after this many seconds

    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):  # silence stderr
        pass

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # -- infrastructure ------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        hub = self.server.hub
        path, _, query = self.path.partition("?")
        rec = RequestRecord(method=self.command, path=path, query=query, headers=Headers(self.headers.items()),
                            server=self.server.role, port=self.server.server_address[1])
        self._rec = rec
        self._truncate: int | None = None
        self._cr_mode: str | None = None
        self._ignore_range = False
        self._do_reset = False
        hub.requests._append(rec)
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 0:
                self.rfile.read(length)
            if hub.latency > 0:
                hub._sleep(hub.latency)
            if hub._stopping.is_set():
                self._reset()
                return
            injection = hub._take_fault(self.command, path, query, self.server.role,
                                        has_range=self.headers.get("Range") is not None)
            if injection is not None:
                rec.fault = injection.fault.kind
                if self._apply_fault(injection):
                    return
            self._route(path, query)
        except OSError:
            self.close_connection = True
        except Exception:
            hub.server_errors.append(traceback.format_exc())
            self.close_connection = True
            if rec.status is None:
                try:
                    self._hub_error(500, None, "fakehub internal error")
                except OSError:
                    pass

    def finish(self) -> None:
        super().finish()
        if getattr(self, "_do_reset", False):
            self.connection.close()  # SO_LINGER 0 -> RST

    def _reset(self) -> None:
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self._do_reset = True
        self.close_connection = True

    def _start(self, code: int, headers: Iterable[tuple[str, str]]) -> None:
        self._rec.status = code  # before any byte is written, so the client can never see an unlogged status
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def _send_body(self, code: int, body: bytes, headers: Iterable[tuple[str, str]] = (),
                   content_type: str = "application/json; charset=utf-8") -> None:
        self._start(code, [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers])
        if self.command != "HEAD" and body:
            self._write_limited([body])

    def _send_json(self, code: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send_body(code, json.dumps(obj).encode(), headers)

    def _hub_error(self, code: int, error_code: str | None, message: str,
                   headers: Iterable[tuple[str, str]] = ()) -> None:
        h = [("X-Request-Id", self.server.hub._request_id())]
        if error_code:
            h.append(("X-Error-Code", error_code))
        h.append(("X-Error-Message", message))
        self._send_json(code, {"error": message}, [*h, *headers])

    def _s3_error(self, code: int, s3_code: str, message: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{s3_code}</Code>'
                f"<Message>{message}</Message></Error>").encode()
        self._send_body(code, body, content_type="application/xml")

    def _write_limited(self, chunks: Iterable[bytes | memoryview]) -> None:
        left = self._truncate
        for chunk in chunks:
            if left is not None and len(chunk) >= left:
                if left:
                    self.wfile.write(chunk[:left])
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            self.wfile.write(chunk)
            if left is not None:
                left -= len(chunk)

    def _self_url(self, path_and_query: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path_and_query}"

    # -- faults --------------------------------------------------------------------------------------------------

    def _apply_fault(self, inj: Injection) -> bool:
        """Returns True when the fault produced the whole response."""
        fault, hub = inj.fault, self.server.hub
        if fault.kind == "status":
            code = fault.param("code")
            headers = list(fault.param("headers"))
            if fault.param("retry_after") is not None:
                headers.append(("Retry-After", str(fault.param("retry_after"))))
            message = fault.param("message") or http.server.BaseHTTPRequestHandler.responses.get(
                code, ("Error",))[0]
            self._hub_error(code, fault.param("error_code"), message, headers)
            return True
        if fault.kind == "reset":
            self._reset()
            return True
        if fault.kind == "redirect_loop":
            self._loop_redirect(inj.id)
            return True
        if fault.kind in ("slow_first_byte", "latency"):
            hub._sleep(fault.param("seconds"))
            if hub._stopping.is_set():
                self._reset()
                return True
            return False
        if fault.kind == "truncate":
            self._truncate = fault.param("after_bytes")
            return False
        if fault.kind == "wrong_content_range":
            self._cr_mode = fault.param("mode")
            return False
        if fault.kind == "ignore_range":
            self._ignore_range = True
            return False
        raise ValueError(f"unknown fault {fault.kind!r}")

    def _loop_redirect(self, injection_id: int) -> None:
        path = self.path.partition("?")[0]
        self._send_body(302, b"", [("Location", self._self_url(f"{path}?{_LOOP_PARAM}={injection_id}"))],
                        content_type="text/plain; charset=utf-8")

    # -- routing -------------------------------------------------------------------------------------------------

    def _route(self, path: str, query: str) -> None:
        hub = self.server.hub
        if self.command not in ("GET", "HEAD"):
            self.close_connection = True
            self._hub_error(405, None, "Method not allowed", [("Allow", "GET, HEAD")])
            return
        is_cdn_path = path.startswith("/cdn/")
        if self.server.role == "cdn" or (is_cdn_path and not hub.cdn_separate_port):
            if is_cdn_path:
                self._cdn(path[len("/cdn/"):], query)
            else:
                self._s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        segs = path.split("/")[1:]
        if len(segs) >= 3 and segs[0] == "api" and segs[1] == "models" and segs[2]:
            self._api(segs[2:], query)
            return
        if len(segs) >= 3 and segs[0]:
            repo_id, rest = _split_repo(segs, {"resolve"})
            if len(rest) >= 3 and rest[0] == "resolve":
                revision, fparts = unquote(rest[1]), rest[2:]
                if revision == "refs" and len(fparts) >= 3 and fparts[0] in ("pr", "convert"):
                    revision, fparts = f"refs/{fparts[0]}/{unquote(fparts[1])}", fparts[2:]
                filename = "/".join(unquote(p) for p in fparts)
                if filename:
                    self._resolve(repo_id, revision, filename)
                    return
        self._hub_error(404, None, "Sorry, we can't find the page you are looking for.")

    def _access_error(self, repo: _Repo, for_files: bool) -> tuple[int, str, str] | None:
        hub = self.server.hub
        token = _bearer(self.headers.get("Authorization"))
        ok = repo.token is not None and token is not None and hmac.compare_digest(token, repo.token)
        if repo.private and not ok:
            return 401, "RepoNotFound", "Repository not found"
        if repo.gated and for_files and not ok:
            if token is None:
                return 401, "GatedRepo", (
                    f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in.")
            return 403, "GatedRepo", (
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized list. "
                f"Visit {hub.endpoint}/{repo.repo_id} to ask for access.")
        return None

    def _api(self, segs: list[str], query: str) -> None:
        hub = self.server.hub
        repo_id, rest = _split_repo(segs, {"revision", "tree"})
        params = parse_qs(query)
        with hub._lock:
            repo = hub._repos.get(repo_id)
        if repo is None:
            self._hub_error(404, "RepoNotFound", "Repository not found")
            return
        err = self._access_error(repo, for_files=False)
        if err:
            self._hub_error(*err)
            return
        if not rest:
            revision, kind, sub = repo.default_branch, "info", ""
        elif rest[0] == "revision" and len(rest) == 2:
            revision, kind, sub = unquote(rest[1]), "info", ""
        elif rest[0] == "tree" and len(rest) >= 2:
            revision, kind, sub = unquote(rest[1]), "tree", "/".join(unquote(p) for p in rest[2:]).strip("/")
        else:
            self._hub_error(404, None, "Sorry, we can't find the page you are looking for.")
            return
        with hub._lock:
            sha = repo.resolve(revision)
            files = dict(repo.commits[sha]) if sha else None
        if sha is None:
            self._hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        if kind == "info":
            blobs = params.get("blobs", ["false"])[-1].lower() in ("1", "true")
            self._send_json(200, hub._model_info(repo, sha, files, blobs))
        else:
            recursive = params.get("recursive", ["false"])[-1].lower() in ("1", "true")
            tree = hub._tree(files, sub, recursive)
            if tree is None:
                self._hub_error(404, "EntryNotFound", f"{sub} does not exist on \"{revision}\"",
                                [("X-Repo-Commit", sha)])
            else:
                self._send_json(200, tree)

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        hub = self.server.hub
        with hub._lock:
            repo = hub._repos.get(repo_id)
        if repo is None:
            self._hub_error(404, "RepoNotFound", "Repository not found")
            return
        err = self._access_error(repo, for_files=True)
        if err:
            self._hub_error(*err)
            return
        with hub._lock:
            sha = repo.resolve(revision)
            f = repo.commits[sha].get(filename) if sha else None
        if sha is None:
            self._hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        if f is None:
            self._hub_error(404, "EntryNotFound", "Entry not found", [("X-Repo-Commit", sha)])
            return
        if f.lfs:
            headers = [
                ("Location", hub._signed_cdn_url(f)),
                ("X-Repo-Commit", sha),
                ("X-Linked-Etag", f'"{f.sha256}"'),
                ("X-Linked-Size", str(f.size)),
                ("X-Request-Id", hub._request_id()),
                ("Vary", "Origin, Accept"),
            ]
            self._send_body(302, b"", headers, content_type="text/plain; charset=utf-8")
            return
        ctype = "application/json; charset=utf-8" if filename.endswith(".json") else "text/plain; charset=utf-8"
        self._serve_blob(f.blob, f'"{f.git_oid}"', [("X-Repo-Commit", sha), ("Content-Type", ctype),
                                                    ("X-Request-Id", hub._request_id())])

    def _cdn(self, oid: str, query: str) -> None:
        hub = self.server.hub
        params = parse_qs(query)
        with hub._lock:
            blob = hub._blobs.get(oid)
        if blob is None:
            self._s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        sig = params.get("X-Amz-Signature", [""])[-1]
        expires = params.get("Expires", [""])[-1]
        if not hmac.compare_digest(sig, hub._signature(oid, expires)):
            self._s3_error(403, "AccessDenied", "Invalid signature")
            return
        if not expires.lstrip("-").isdigit() or int(expires) < time.time():
            self._s3_error(403, "AccessDenied", "Request has expired")
            return
        self._serve_blob(blob, f'"{oid}"', [("Content-Type", "application/octet-stream"),
                                             ("Cache-Control", "public, max-age=604800, immutable")])

    def _serve_blob(self, blob: _Blob, etag: str, headers: list[tuple[str, str]]) -> None:
        total = blob.size
        inm = self.headers.get("If-None-Match")
        if inm and _etag_matches(inm, etag):
            self._start(304, [("ETag", etag), ("Accept-Ranges", "bytes"),
                              *[(k, v) for k, v in headers if k != "Content-Type"]])
            return
        rng_header = self.headers.get("Range")
        rng = _parse_range(rng_header, total) if rng_header and not self._ignore_range else None
        if rng == "unsatisfiable":
            self._start(416, [("Content-Range", f"bytes */{total}"), ("Content-Length", "0"),
                              ("Accept-Ranges", "bytes"), ("ETag", etag)])
            return
        common = [("Accept-Ranges", "bytes"), ("ETag", etag), *headers]
        if rng is None:
            start, stop = 0, total
            self._start(200, [("Content-Length", str(total)), *common])
        else:
            start, stop = rng
            content_range = f"bytes {start}-{stop - 1}/{total}"
            if self._cr_mode == "shift":
                content_range = f"bytes {start + 1}-{stop}/{total}"
            elif self._cr_mode == "total":
                content_range = f"bytes {start}-{stop - 1}/{total + 1}"
            cr = [] if self._cr_mode == "missing" else [("Content-Range", content_range)]
            self._start(206, [("Content-Length", str(stop - start)), *cr, *common])
        if self.command != "HEAD":
            self._write_limited(blob.iter_bytes(start, stop))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default 5 makes bursts of connections wait for SYN retries (1 s)

    def __init__(self, address, hub: FakeHub, role: str):
        self.hub = hub
        self.role = role
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        t = threading.Thread(target=self._run_request, args=(request, client_address),
                             name=f"fakehub-{self.role}-conn", daemon=True)
        with self._conns_lock:
            self._conns[request] = t
        t.start()

    def _run_request(self, request, client_address):
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(request, None)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):
            self.hub.server_errors.append(traceback.format_exc())

    def close_connections(self, timeout: float) -> list[threading.Thread]:
        with self._conns_lock:
            items = list(self._conns.items())
        for sock, _ in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for _, t in items:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t for _, t in items if t.is_alive()]


# --------------------------------------------------------------------------------------------------------------
# FakeHub
# --------------------------------------------------------------------------------------------------------------


class FakeHub:
    """A fake huggingface.co (+ CDN) serving registered repos from memory. See the module docstring."""

    def __init__(self, *, cdn_separate_port: bool = False, cdn_host: str | None = None,
                 host: str = "127.0.0.1", latency: float = 0.0, cdn_url_ttl: float = 3600):
        self.cdn_separate_port = cdn_separate_port
        self.cdn_host = cdn_host
        self.host = host
        self.latency = latency
        self.cdn_url_ttl = cdn_url_ttl
        self.requests = RequestLog()
        self.server_errors: list[str] = []
        self._lock = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._blobs: dict[str, _Blob] = {}
        self._injections: list[Injection] = []
        self._ids = itertools.count(1)
        self._secret = secrets.token_bytes(16)
        self._stopping = threading.Event()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._hub_server: _Server | None = None
        self._cdn_server: _Server | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        if self._servers:
            return self
        self._stopping.clear()
        self._hub_server = _Server((self.host, 0), self, "hub")
        self._servers = [self._hub_server]
        if self.cdn_separate_port:
            self._cdn_server = _Server((self.host, 0), self, "cdn")
            self._servers.append(self._cdn_server)
        else:
            self._cdn_server = self._hub_server
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                 name=f"fakehub-{srv.role}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if not self._servers:
            return
        self._stopping.set()  # wakes sleeping faults
        for srv in self._servers:
            srv.shutdown()
        stuck = []
        for srv in self._servers:
            stuck += srv.close_connections(timeout)
            srv.server_close()
        for t in self._threads:
            t.join(timeout)
        self._servers, self._threads = [], []
        if stuck:
            raise RuntimeError(f"fakehub: {len(stuck)} connection thread(s) did not stop")

    close = stop

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    @property
    def running(self) -> bool:
        return bool(self._servers)

    # -- addresses -----------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._hub_server is None:
            raise RuntimeError("FakeHub is not started")
        return self._hub_server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def cdn_port(self) -> int:
        if self._cdn_server is None:
            raise RuntimeError("FakeHub is not started")
        return self._cdn_server.server_address[1]

    @property
    def cdn_endpoint(self) -> str:
        return f"http://{self.cdn_host or self.host}:{self.cdn_port}"

    def url(self, repo_id: str, filename: str, revision: str = "main") -> str:
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"

    def api_url(self, repo_id: str, revision: str | None = None) -> str:
        base = f"{self.endpoint}/api/models/{repo_id}"
        return base if revision is None else f"{base}/revision/{quote(revision, safe='')}"

    def cdn_path(self, repo_id: str, filename: str, revision: str = "main") -> str:
        """Path (no query) of the CDN object behind an LFS file, e.g. to inject faults on it."""
        return f"/cdn/{self._file(repo_id, filename, revision).sha256}"

    def cdn_url(self, repo_id: str, filename: str, revision: str = "main") -> str:
        """A freshly signed CDN URL, as the resolve redirect would give."""
        return self._signed_cdn_url(self._file(repo_id, filename, revision))

    def sha(self, repo_id: str, revision: str = "main") -> str:
        with self._lock:
            sha = self._repos[repo_id].resolve(revision)
        if sha is None:
            raise KeyError(revision)
        return sha

    # -- registration --------------------------------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: Mapping[str, FileContent], revision_sha: str | None = None,
                 branch: str = "main", gated: Any = False, private: bool = False, token: str | None = None,
                 lfs_patterns: Iterable[str] = LFS_PATTERNS) -> str:
        """Register (or add a commit/branch to) a model repo; returns the commit sha."""
        if revision_sha is None:
            revision_sha = hashlib.sha1(f"{repo_id}\0{branch}\0{next(self._ids)}".encode()).hexdigest()
        if not re.fullmatch(r"[0-9a-f]{40}", revision_sha):
            raise ValueError("revision_sha must be 40 lowercase hex characters")
        if gated not in (False, True, "auto", "manual"):
            raise ValueError("gated must be False, True, 'auto' or 'manual'")
        lfs_patterns = tuple(lfs_patterns)
        built = {self._norm_name(name): self._make_file(self._norm_name(name), content, lfs_patterns)
                 for name, content in files.items()}
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                repo = self._repos[repo_id] = _Repo(repo_id, default_branch=branch)
            repo.gated = "manual" if gated is True else gated
            repo.private = bool(private)
            repo.token = token if token is not None else (DEFAULT_TOKEN if (gated or private) else None)
            repo.commits[revision_sha] = built
            repo.branches[branch] = revision_sha
            for f in built.values():
                self._register_blob(f)
        return revision_sha

    def add_file(self, repo_id: str, filename: str, content: FileContent, branch: str = "main",
                 lfs_patterns: Iterable[str] = LFS_PATTERNS) -> str:
        """Add/replace one file in the commit `branch` points to (the sha is unchanged); creates the repo or
        branch if needed."""
        name = self._norm_name(filename)
        f = self._make_file(name, content, tuple(lfs_patterns))
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is not None and branch in repo.branches:
                sha = repo.branches[branch]
                repo.commits[sha][name] = f
                self._register_blob(f)
                return sha
        if repo is None:
            return self.add_repo(repo_id, {name: content}, branch=branch, lfs_patterns=lfs_patterns)
        return self.add_repo(repo_id, {name: content}, branch=branch, gated=repo.gated, private=repo.private,
                             token=repo.token, lfs_patterns=lfs_patterns)

    def add_safetensors(self, repo_id: str, filename: str, header_bytes: bytes | str, data_len: int,
                        branch: str = "main") -> str:
        """Serve ``u64le(len(header_bytes)) + header_bytes + b"\\0" * data_len`` (lazily) as an LFS file."""
        return self.add_file(repo_id, filename, VirtualSafetensors(header_bytes, data_len), branch=branch)

    @staticmethod
    def _norm_name(name: str) -> str:
        name = name.strip("/")
        if not name or ".." in name.split("/"):
            raise ValueError(f"bad file name {name!r}")
        return name

    @staticmethod
    def _make_file(name: str, content: FileContent, lfs_patterns: tuple[str, ...]) -> _File:
        if isinstance(content, VirtualSafetensors):
            return _File(name, content, lfs=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, (bytes, bytearray)):
            raise TypeError(f"{name}: content must be bytes, str or VirtualSafetensors")
        blob = _BytesBlob(bytes(content))
        base = name.rsplit("/", 1)[-1]
        lfs = blob.size > _LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(base, p) for p in lfs_patterns)
        return _File(name, blob, lfs=lfs)

    def _register_blob(self, f: _File) -> None:
        if f.lfs:
            self._blobs[f.sha256] = f.blob

    def _file(self, repo_id: str, filename: str, revision: str) -> _File:
        with self._lock:
            repo = self._repos[repo_id]
            sha = repo.resolve(revision)
            if sha is None:
                raise KeyError(revision)
            f = repo.commits[sha][filename]
        if not f.lfs:
            raise ValueError(f"{filename} is not an LFS file (it is served by the hub directly)")
        return f

    # -- faults --------------------------------------------------------------------------------------------------

    def inject(self, path_glob: str, fault: Fault, times: int | None = 1, *, method: str | None = None,
               server: str | None = None) -> Injection:
        """Apply `fault` to the next `times` requests whose path matches `path_glob` (None: all of them)."""
        if not isinstance(fault, Fault):
            raise TypeError("fault must be built with status(), reset(), truncate(), ...")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if server not in (None, "hub", "cdn"):
            raise ValueError("server must be None, 'hub' or 'cdn'")
        inj = Injection(next(self._ids), path_glob, fault, times, method.upper() if method else None, server)
        with self._lock:
            self._injections.append(inj)
        return inj

    def clear_faults(self) -> None:
        with self._lock:
            self._injections.clear()

    def _take_fault(self, method: str, path: str, query: str, server: str, has_range: bool) -> Injection | None:
        with self._lock:
            loop_id = parse_qs(query).get(_LOOP_PARAM, [None])[-1]
            if loop_id is not None:
                for inj in self._injections:
                    if str(inj.id) == loop_id and inj.fault.kind == "redirect_loop":
                        inj.hits += 1
                        return inj  # the loop continues without using up a count
            for inj in self._injections:
                if inj._matches(method, path, server, has_range):
                    inj.hits += 1
                    if inj.remaining is not None:
                        inj.remaining -= 1
                    return inj
        return None

    # -- helpers for the handler ---------------------------------------------------------------------------------

    def _request_id(self) -> str:
        return f"Root=1-{secrets.token_hex(4)}-{secrets.token_hex(12)}"

    def _signature(self, oid: str, expires: str) -> str:
        return hmac.new(self._secret, f"/cdn/{oid}:{expires}".encode(), hashlib.sha256).hexdigest()

    def _signed_cdn_url(self, f: _File) -> str:
        oid = f.sha256
        expires = str(int(time.time() + self.cdn_url_ttl))
        return f"{self.cdn_endpoint}/cdn/{oid}?X-Amz-Signature={self._signature(oid, expires)}&Expires={expires}"

    def _model_info(self, repo: _Repo, sha: str, files: dict[str, _File], blobs: bool) -> dict:
        siblings = []
        params: dict[str, int] = {}
        have_safetensors = False
        config_summary = None
        for name in sorted(files):
            f = files[name]
            s: dict[str, Any] = {"rfilename": name}
            if blobs:
                s["blobId"] = f.git_oid
                s["size"] = f.size
                if f.lfs:
                    s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer())}
            siblings.append(s)
            if name.endswith(".safetensors"):
                header = f.safetensors_header()
                counted = _count_params(header) if header is not None else None
                if counted is not None:  # like the Hub, a file it cannot read adds nothing to the summary
                    have_safetensors = True
                    for dtype, n in counted.items():
                        params[dtype] = params.get(dtype, 0) + n
            if name == "config.json" and not f.lfs:
                try:
                    cfg = json.loads(f.blob.data)  # type: ignore[attr-defined]
                    config_summary = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
                except Exception:
                    pass
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": author,
            "sha": sha,
            "lastModified": _FIXED_DATE,
            "createdAt": _FIXED_DATE,
            "private": repo.private,
            "disabled": False,
            "gated": repo.gated,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if config_summary is not None:
            info["config"] = config_summary
        if have_safetensors:
            info["safetensors"] = {"parameters": params, "total": sum(params.values())}
        return info

    def _tree(self, files: dict[str, _File], sub: str, recursive: bool) -> list | None:
        prefix = f"{sub}/" if sub else ""
        out, dirs = [], []
        for name in sorted(files):
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix):]
            if "/" in rel and not recursive:
                d = prefix + rel.split("/", 1)[0]
                if d not in dirs:
                    dirs.append(d)
                continue
            if recursive:
                parts = rel.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = prefix + "/".join(parts[:i])
                    if d not in dirs:
                        dirs.append(d)
            f = files[name]
            entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": name}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer())}
            out.append(entry)
        if sub and not out and not dirs:
            return None
        dir_entries = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                       for d in dirs]
        return dir_entries + out


def _count_params(header: dict) -> dict[str, int] | None:
    """dtype -> Σ numel of a parsed header, or None when an entry is malformed (hostile headers are served too)."""
    out: dict[str, int] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if not isinstance(dtype, str) or not isinstance(shape, list):
            return None
        n = 1
        for d in shape:  # stop at the first overflow (a hostile shape may have a million huge dims)
            if type(d) is not int or d < 0 or n * d >= 2**63:
                return None
            n *= d
        out[dtype] = out.get(dtype, 0) + n
    return out


# --------------------------------------------------------------------------------------------------------------
# snapshots
# --------------------------------------------------------------------------------------------------------------


def repo_from_snapshot(snapshot_dir: str | Path, tensors: Mapping[str, Any] | None = None, *,
                       include: Iterable[str] = ("config.json", "model.safetensors.index.json"),
                       metadata: Mapping[str, str] | None = None, strict: bool = True) -> dict[str, FileContent]:
    """Files for add_repo from /work/shared/hub-snapshots/<org>/<name>/ (see the module docstring)."""
    root = Path(snapshot_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no snapshot directory {root}")
    patterns = tuple(include)
    files: dict[str, FileContent] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and any(fnmatch.fnmatchcase(rel, pat) for pat in patterns):
            files[rel] = p.read_bytes()
    if tensors is None:
        return files
    meta = {"format": "pt"} if metadata is None else metadata
    index = files.get("model.safetensors.index.json")
    if index is None:
        header, n = build_safetensors_header(tensors, meta)
        files["model.safetensors"] = VirtualSafetensors(header, n)
        return files
    weight_map: dict[str, str] = json.loads(index)["weight_map"]
    shards = sorted(set(weight_map.values()))
    unknown = [name for name in tensors if name not in weight_map]
    missing = [name for name in weight_map if name not in tensors]
    if strict and (unknown or missing):
        raise ValueError(
            f"tensors do not match the index of {root}: {len(unknown)} not in the index {unknown[:5]}, "
            f"{len(missing)} in the index but not given {missing[:5]} (strict=False to tolerate)")
    groups: dict[str, dict[str, Any]] = {s: {} for s in shards}
    for name, spec in tensors.items():
        groups[weight_map.get(name, shards[-1])][name] = spec
    for shard, group in groups.items():
        header, n = build_safetensors_header(group, meta)
        files[shard] = VirtualSafetensors(header, n)
    return files
