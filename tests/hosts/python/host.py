#!/usr/bin/env python3
"""A host for `pipeshub:connector@0.2.0` components, in Python, on the `wasmtime` package.

It is the test double of a platform: it runs one connector component for one tenant, keeps the
tenant's records store in memory, sends the component's HTTP requests to one base URL (the
Dropbox emulator in the tests) and is driven over stdin/stdout, one JSON object per line each
way (the protocol is in the Rust driver, tests/hosts.rs). It is also meant to be read: it shows,
in one file, everything a host of the contract has to provide.

    python3 host.py --component connector.wasm --api-base http://127.0.0.1:8765 \
        --token TOKEN [--body-cap 1048576]

What a host provides (each part below has its section):
  1. WASI with no capability: no preopened directory, no environment, no arguments, an empty
     stdin, the guest's stdout discarded and its stderr passed on as logs.
  2. `http`: only to the hosts the manifest declares, the bearer token attached by the host,
     no redirects, a response-body cap, read timeouts.
  3. `records` and `paths`: the tenant's store, with the semantics the WIT documents.
  4. `content-sink`, `credentials`, `host` (logs, limits, sleep, stop signal, configuration).
  5. A fresh instance for every operation: nothing survives between calls but the store.

Everything printed on stdout is a protocol line; logs go to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import http.client
import json
import socket
import sys
import time
import traceback
import urllib.parse
from typing import Any, Callable, Optional

import wasmtime
from wasmtime import _ffi as ffi  # only for the byte-list fast path below
from wasmtime.component import Component, Linker, ListType, Record, Variant

CONTRACT_PACKAGE = "pipeshub:connector"
CONTRACT_VERSION = "0.2.0"

# The limits this host states in `host.limits()`. The body cap is the contract's minimum by
# default, 1 MiB: see "Byte lists" below for why a Python host should not state much more.
DEFAULT_BODY_CAP = 1 << 20
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 600_000
# `http.start` only remembers the request; `wait` performs it. One pending request is enough
# for that, and the contract allows a host to say so.
MAX_PENDING_REQUESTS = 1
# The contract's list cap (connector.wit, `host-limits`): a list a call takes or returns holds
# at most this many items; more is `invalid`, never a list cut short.
MAX_LIST_ITEMS = 10_000


def over_cap(count: int, what: str) -> Optional[Variant]:
    """The `invalid` store-error for a list past the cap, else None."""
    if count > MAX_LIST_ITEMS:
        return Variant("invalid", f"{what}: {count} items, more than the list cap of {MAX_LIST_ITEMS}")
    return None
CONNECT_TIMEOUT_S = 10
# The longest `list<u8>` a guest can pass to a host function of this binding in one call (a
# content-sink chunk, a request body), measured with wasmtime 50.0.1: Wasmtime's per-call
# "hostcall fuel" (128 MiB) divided by the 48 bytes it counts per lifted value, rounded down.
# The body cap also bounds those lists, so this host refuses to state a larger one.
MAX_GUEST_BYTE_LIST = (128 << 20) // 48  # 2,796,202 bytes
# The guest's linear memory cap. The connector reads content in ranges of at most the body cap,
# so it never needs much; a guest that grows past this fails to allocate instead of taking the
# machine.
GUEST_MEMORY_CAP = 256 << 20


def interface(name: str) -> str:
    """The import/export name of one of the contract's interfaces."""
    return f"{CONTRACT_PACKAGE}/{name}@{CONTRACT_VERSION}"


def log(message: str) -> None:
    print(f"[python-host] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Byte lists: the one place this host reaches into the binding.
#
# The dynamic component API converts every value through the C API's `wasmtime_component_val_t`,
# a 32-byte tagged union, and the Python binding converts a `list<u8>` element by element, in
# Python. Two consequences for a host:
#   - speed: a 1 MiB list costs about a million Python-level conversions each way (about 1.3 s
#     per MiB, measured). Content streaming and HTTP bodies are exactly such lists, so this host
#     replaces the conversion of `list<u8>` (and only that) by strided copies over the 32-byte
#     values, about ten times faster; it checks itself against the binding's own conversion at
#     start. What remains is Wasmtime's own per-byte cost (a `Val` of 48 bytes and a C value of
#     32 bytes for every byte), which caps streaming at a few MiB/s.
#   - size: Wasmtime bounds what one guest-to-host call may copy ("hostcall fuel", 128 MiB, not
#     settable from the C API or Python) and charges a dynamically lifted list 48 bytes per
#     element, so a `list<u8>` argument (a content-sink chunk, a request body) of more than
#     2,796,202 bytes traps the guest: "too much data is being copied between the host and the
#     guest: fuel allocated for hostcalls has been exhausted". The contract's
#     `max-response-body` bounds every such list, hence MAX_GUEST_BYTE_LIST above.
# --------------------------------------------------------------------------------------------

_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)
_KIND_OFFSET = ffi.wasmtime_component_val_t.kind.offset
_U8_OFFSET = ffi.wasmtime_component_val_t.of.offset + ffi.wasmtime_component_valunion_t.u8.offset
_U8_KIND = ffi.WASMTIME_COMPONENT_U8.value
_LIST_KIND = ffi.WASMTIME_COMPONENT_LIST.value

_generic_list_from_c = ListType.convert_from_c
_generic_list_to_c = ListType.convert_to_c


def _c_values(data: Any, n: int) -> memoryview:
    """The raw memory of `n` C values starting at the pointer `data`, as bytes."""
    address = ctypes.cast(data, ctypes.c_void_p).value
    return memoryview((ctypes.c_char * (n * _VAL_SIZE)).from_address(address)).cast("B")


def _bytes_from_c(self: ListType, c: Any) -> Any:
    if not self._is_bytes():
        return _generic_list_from_c(self, c)
    assert c.kind == _LIST_KIND
    try:
        n = c.of.list.size
        if n == 0:
            return b""
        # Every element is a whole value; its byte sits at the same offset in each.
        return _c_values(c.of.list.data, n)[_U8_OFFSET::_VAL_SIZE].tobytes()
    finally:
        # The elements own nothing, so the list is freed as a whole.
        ffi.wasmtime_component_vallist_delete(ctypes.byref(c.of.list))


def _bytes_to_c(self: ListType, store: Any, val: Any, ptr: Any) -> None:
    if not self._is_bytes():
        return _generic_list_to_c(self, store, val, ptr)
    if not isinstance(val, (bytes, bytearray, memoryview)):
        raise TypeError("expected bytes for a list<u8>")
    data = bytes(val)
    n = len(data)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        # Written in place: only the tag and the byte of each value are ever read.
        values = _c_values(raw.data, n)
        values[_KIND_OFFSET::_VAL_SIZE] = bytes([_U8_KIND]) * n
        values[_U8_OFFSET::_VAL_SIZE] = data
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
    ptr.contents.of.list = raw


def install_byte_list_fast_path(engine: wasmtime.Engine) -> None:
    """Replace the binding's `list<u8>` conversion, after checking both give the same values."""
    byte_list = _byte_list_type(engine)
    sample = bytes(range(256)) * 3
    # Each direction of the fast path against the other direction of the binding's own.
    for to_c, from_c in ((_generic_list_to_c, _bytes_from_c), (_bytes_to_c, _generic_list_from_c)):
        val = ffi.wasmtime_component_val_t()
        to_c(byte_list, None, sample, ctypes.pointer(val))
        back = from_c(byte_list, val)
        if bytes(back) != sample:
            raise RuntimeError("this wasmtime binding lays out list<u8> values differently: "
                               "the byte-list fast path cannot be used with it")
    ListType.convert_from_c = _bytes_from_c  # type: ignore[method-assign]
    ListType.convert_to_c = _bytes_to_c  # type: ignore[method-assign]


def _byte_list_type(engine: wasmtime.Engine) -> ListType:
    """A `list<u8>` type object, taken from a one-function component (the binding has no
    constructor for types)."""
    wat = """(component
        (core module $m (memory (export "mem") 1)
            (func (export "f") (result i32) i32.const 0))
        (core instance $i (instantiate $m))
        (func (export "f") (result (list u8))
            (canon lift (core func $i "f") (memory (core memory $i "mem")))))"""
    component = Component(engine, wat)
    store = wasmtime.Store(engine)
    instance = Linker(engine).instantiate(store, component)
    func = instance.get_func(store, "f")
    assert func is not None
    result = func.type(store).result
    assert isinstance(result, ListType)
    return result


# --------------------------------------------------------------------------------------------
# Values. The binding hands records over as `Record` objects whose attributes are the WIT field
# names (kebab-case: `getattr(r, "external-id")`), variants with payloads as `Variant(tag,
# payload)`, enums as strings, options as the value or None, and `result<T, E>` as the bare
# value when T's and E's Python types differ (which is how this WIT is shaped: the host returns
# a `Record` for ok and a `Variant` for err). Beware: a `result<option<T>, E>` cannot carry its
# error that way (None and the Variant are both `object`s); `get-sync-point` never fails here.
# --------------------------------------------------------------------------------------------


def wit_record(**fields: Any) -> Record:
    """A WIT record from Python keyword arguments (`external_id=` sets `external-id`)."""
    r = Record()
    for name, value in fields.items():
        setattr(r, name.replace("_", "-"), value)
    return r


def wit_get(r: Any, name: str) -> Any:
    return getattr(r, name)


RECORD_FIELDS = (
    "external-id", "revision", "name", "path", "parent-external-id", "kind", "mime-type", "size",
    "content-hash", "client-modified", "server-modified", "is-downloadable", "export-format",
    "web-url", "is-shared", "shared-url",
)


def record_from_wit(r: Record) -> dict:
    """A guest's `record` as a plain dict (kebab-case keys, `path` a dict or None)."""
    out = {name: wit_get(r, name) for name in RECORD_FIELDS}
    path = out["path"]
    out["path"] = None if path is None else {"display": path.display, "lower": path.lower}
    return out


def record_to_wit(d: dict) -> Record:
    r = Record()
    for name in RECORD_FIELDS:
        setattr(r, name, d[name])
    if d["path"] is not None:
        r.path = wit_record(display=d["path"]["display"], lower=d["path"]["lower"])
    return r


def path_lower(d: dict) -> Optional[str]:
    return None if d["path"] is None else d["path"]["lower"]


# --------------------------------------------------------------------------------------------
# The records store, in memory, exactly as the WIT documents it.
# --------------------------------------------------------------------------------------------


class StoreError(Exception):
    """A `store-error`: kind is "conflict", "storage" or "invalid"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind

    def to_wit(self) -> Variant:
        return Variant(self.kind, str(self))


@dataclasses.dataclass(frozen=True)
class Entry:
    """A stored record. Frozen: a change makes a new entry, so a batch can work on a shallow
    copy of the store's maps and be dropped whole when it fails."""

    record: dict
    pending: bool


EVENT_OF_CHANGE_KIND = {
    "created": "created",
    "content": "content",
    "metadata": "metadata",
    "content-and-metadata": "content-and-metadata",
    "unchanged": None,
}


class RecordsStore:
    """One tenant's records, sync point, owner and event stream.

    `entries` holds every stored record by external id, live or pending removal. `live_paths`
    indexes the LIVE records that have a path by `path.lower`: it is what enforces "at most
    one live record at a path", and what the path operations search. Strings compare in code
    point order in Python, which is the byte order of their UTF-8 form, as the WIT asks.
    """

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.live_paths: dict[str, str] = {}
        self.sync_point: Optional[dict] = None  # {"position", "phase", "detail"}
        self.owner: Optional[dict] = None
        self.events: list[dict] = []  # {"seq", "external_id", "kind"}, never cleared

    # ---- apply: all of the batch or nothing ---------------------------------------------

    def apply(self, changes: list, sync_point: Optional[Record]) -> dict:
        batch = _Batch(self)
        for change in changes:
            batch.apply(change)
        # Only now, when every change went through, does the batch become the store.
        self.entries, self.live_paths = batch.entries, batch.live_paths
        for external_id, kind in batch.events:
            self.events.append({"seq": len(self.events) + 1, "external_id": external_id, "kind": kind})
        if sync_point is not None:  # a batch without one keeps the stored one
            self.sync_point = {
                "position": sync_point.position,
                "phase": sync_point.status.phase,
                "detail": sync_point.status.detail,
            }
        return batch.summary

    # ---- reads ----------------------------------------------------------------------------

    def live(self) -> list[dict]:
        return [e.record for e in self.entries.values() if not e.pending]

    def get_records(self, ids: list[str]) -> list[Entry]:
        return [self.entries[i] for i in ids if i in self.entries]

    def list_records(self, after: Optional[str], limit: int) -> list[dict]:
        ids = sorted(i for i, e in self.entries.items()
                     if not e.pending and (after is None or i > after))
        return [self.entries[i].record for i in ids[:limit]]

    def list_shared(self) -> list[dict]:
        return [r for r in self.live() if r["is-shared"]]

    def find_by_paths(self, paths: list[str]) -> list[Optional[dict]]:
        found = (self.live_paths.get(p) for p in paths)
        return [None if i is None else self.entries[i].record for i in found]

    def list_subtree(self, path: str, after: Optional[str], limit: int) -> list[dict]:
        prefix = path + "/"
        below = sorted(p for p in self.live_paths
                       if p.startswith(prefix) and (after is None or p > after))
        return [self.entries[self.live_paths[p]].record for p in below[:limit]]

    def clear(self) -> None:
        """Everything the connector stored goes; the event stream keeps its history."""
        self.entries, self.live_paths = {}, {}
        self.sync_point = None
        self.owner = None


class _Batch:
    """One `apply` in progress, on shallow copies of the store's maps."""

    def __init__(self, store: RecordsStore):
        self.entries = dict(store.entries)
        self.live_paths = dict(store.live_paths)
        self.events: list[tuple[str, str]] = []
        self.summary = {"created": 0, "content-updates": 0, "metadata-updates": 0, "deletions": 0}

    def apply(self, change: Variant) -> None:
        tag, payload = change.tag, change.payload
        if tag == "upsert":
            self.upsert(record_from_wit(payload.record), payload.event)
        elif tag == "remove":
            self.mark_pending(payload)
        elif tag == "replace":
            self.replace(wit_get(payload, "path-lower"), wit_get(payload, "new-external-id"),
                         wit_get(payload, "keep-children"))
        elif tag == "remove-subtree":
            self.mark_subtree(payload)
        elif tag == "mark-all-pending":
            for external_id, entry in self.entries.items():
                if not entry.pending:
                    self.entries[external_id] = Entry(entry.record, True)
            self.live_paths.clear()
        elif tag == "purge":
            self.purge()
        else:
            raise StoreError("invalid", f"unknown change {tag!r}")

    def upsert(self, record: dict, change_kind: str) -> None:
        external_id = record["external-id"]
        if not external_id:
            raise StoreError("invalid", "a record needs an external id")
        new_path = path_lower(record)
        if new_path is not None and not new_path:
            raise StoreError("invalid", f"{external_id}: a path needs a non-empty path.lower")
        if new_path is not None:
            holder = self.live_paths.get(new_path)
            if holder is not None and holder != external_id:
                raise StoreError("conflict", f"{new_path} is already held by {holder}; "
                                             f"replace or remove it before storing {external_id}")
        old = self.entries.get(external_id)
        if old is not None and not old.pending:
            old_path = path_lower(old.record)
            if old_path is not None and self.live_paths.get(old_path) == external_id:
                del self.live_paths[old_path]
        # Storing restores a pending record: it is live again, under its new values.
        self.entries[external_id] = Entry(record, False)
        if new_path is not None:
            self.live_paths[new_path] = external_id
        event = EVENT_OF_CHANGE_KIND.get(change_kind, "?")
        if event == "?":
            raise StoreError("invalid", f"unknown change kind {change_kind!r}")
        if event is None:  # `unchanged`: stored as given, no event
            return
        self.events.append((external_id, event))
        if change_kind == "created":
            self.summary["created"] += 1
        if change_kind in ("content", "content-and-metadata"):
            self.summary["content-updates"] += 1
        if change_kind in ("metadata", "content-and-metadata"):
            self.summary["metadata-updates"] += 1

    def mark_pending(self, external_id: str) -> None:
        """Two-phase removal, first phase: the record stays stored (and live downstream: no
        event) until a purge, and an upsert of the same id restores it."""
        entry = self.entries.get(external_id)
        if entry is None or entry.pending:
            return  # an unknown id is ignored
        self.entries[external_id] = Entry(entry.record, True)
        lower = path_lower(entry.record)
        if lower is not None and self.live_paths.get(lower) == external_id:
            del self.live_paths[lower]

    def mark_subtree(self, path: str) -> None:
        """The live record at `path` and every live descendant: the paths that start with
        `path` + "/" (so "/a" does not take "/ab" along)."""
        prefix = path + "/"
        doomed = [i for p, i in self.live_paths.items() if p == path or p.startswith(prefix)]
        for external_id in doomed:
            self.mark_pending(external_id)

    def replace(self, path: str, new_external_id: str, keep_children: bool) -> None:
        holder = self.live_paths.get(path)
        if holder is None or holder == new_external_id:
            return  # nothing else lives there: nothing is replaced
        if keep_children:
            # A folder took the place: only the replaced record goes. Its descendants stay live
            # and unchanged; re-parenting them is the connector's job (one upsert each).
            self.mark_pending(holder)
        else:
            self.mark_subtree(path)

    def purge(self) -> None:
        """Second phase: what is still pending is deleted, one `deleted` event each, deepest
        paths first (children before their folder)."""
        pending = [(path_lower(e.record) or "", i) for i, e in self.entries.items() if e.pending]
        for _, external_id in sorted(pending, reverse=True):
            del self.entries[external_id]
            self.events.append((external_id, "deleted"))
            self.summary["deletions"] += 1


# --------------------------------------------------------------------------------------------
# HTTP: the component asks, the host decides where the request goes and what it carries.
# --------------------------------------------------------------------------------------------


class HttpError(Exception):
    """An `http-error`: kind is the WIT case, payload its value."""

    def __init__(self, kind: str, payload: Any):
        super().__init__(f"{kind}: {payload}")
        self.kind = kind
        self.payload = payload

    def to_wit(self) -> Variant:
        return Variant(self.kind, self.payload)


# Headers a guest may not set: the host owns the token, the destination and the framing.
FORBIDDEN_HEADERS = {"authorization", "host", "content-length", "transfer-encoding", "connection"}


@dataclasses.dataclass
class PreparedRequest:
    method: str
    target: str  # path and query on the API base
    headers: list[tuple[str, str]]
    body: bytes
    timeout_s: float


class HttpGateway:
    """Sends the component's requests to `api_base`, in place of the hosts it names.

    The tests serve every declared host (api, content, notify) from one emulator, so
    `https://<declared host>/<path>?<query>` goes to `<api_base>/<path>?<query>`.
    """

    def __init__(self, api_base: str, token: str, body_cap: int):
        base = urllib.parse.urlsplit(api_base)
        if base.scheme not in ("http", "https") or not base.hostname:
            raise ValueError(f"--api-base must be an http(s) URL, not {api_base!r}")
        self.base = base
        self.token = token
        self.body_cap = body_cap
        self.allowed_hosts: set[str] = set()  # from the manifest, before any other call

    def prepare(self, req: Record) -> PreparedRequest:
        """Every check that needs no network: destination, headers, body size, credentials."""
        url = req.url
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port  # raises on a malformed port
        except ValueError as e:
            raise HttpError("invalid-request", f"{url}: {e}")
        host = (parts.hostname or "").lower()
        if parts.scheme != "https":
            raise HttpError("destination-not-allowed", f"{url}: only https URLs may be requested")
        if parts.username is not None or parts.password is not None:
            raise HttpError("destination-not-allowed", f"{url}: URLs with user information are refused")
        if port is not None or host not in self.allowed_hosts:
            # No connection is attempted to a host the manifest does not declare.
            raise HttpError("destination-not-allowed", host or url)
        headers = []
        for name, value in req.headers:
            if name.lower() in FORBIDDEN_HEADERS:
                raise HttpError("invalid-request", f"the {name} header is set by the host")
            if any(c in name + value for c in "\r\n"):
                raise HttpError("invalid-request", f"the {name} header contains a line break")
            headers.append((name, value))
        body = bytes(req.body)
        if len(body) > self.body_cap:
            # The contract bounds every list a host call copies by the body cap.
            raise HttpError("invalid-request", f"the request body ({len(body)} bytes) exceeds "
                                               f"the host's limit of {self.body_cap} bytes")
        if req.authenticated:
            if not self.token:
                raise HttpError("no-credentials", "the tenant has no access token")
            headers.append(("Authorization", f"Bearer {self.token}"))
        timeout_ms = wit_get(req, "timeout-ms")
        timeout_ms = DEFAULT_TIMEOUT_MS if timeout_ms is None else min(timeout_ms, MAX_TIMEOUT_MS)
        base_path = self.base.path.rstrip("/")
        target = base_path + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return PreparedRequest(req.method.upper(), target, headers, body, timeout_ms / 1000)

    def perform(self, p: PreparedRequest) -> Record:
        """One request on a fresh connection; the whole response, up to the body cap."""
        connection_class = (http.client.HTTPSConnection if self.base.scheme == "https"
                            else http.client.HTTPConnection)
        conn = connection_class(self.base.hostname, self.base.port, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.connect()
            # From here on the timeout is the request's read timeout: every wait for data.
            assert conn.sock is not None
            conn.sock.settimeout(p.timeout_s)
            # putrequest/putheader keep the guest's headers as given (repeats included);
            # http.client adds only Host, which names the server really asked.
            conn.putrequest(p.method, p.target, skip_accept_encoding=True)
            for name, value in p.headers:
                conn.putheader(name, value)
            if p.body or p.method in ("POST", "PUT"):
                conn.putheader("Content-Length", str(len(p.body)))
            conn.endheaders(p.body or None)
            # http.client follows no redirects: a 3xx is returned to the guest as it came.
            resp = conn.getresponse()
            declared = resp.getheader("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self.body_cap:
                raise HttpError("body-too-large", self.body_cap)
            body = b"" if p.method == "HEAD" else self._read_capped(resp)
            return wit_record(status=resp.status, headers=list(resp.getheaders()), body=body)
        except HttpError:
            raise
        except (socket.timeout, TimeoutError) as e:
            raise HttpError("timeout", f"no answer within {p.timeout_s:g} s ({e})")
        except (OSError, http.client.HTTPException) as e:
            raise HttpError("connection", f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    def _read_capped(self, resp: http.client.HTTPResponse) -> bytes:
        chunks, total = [], 0
        while True:
            chunk = resp.read(min(1 << 20, self.body_cap + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > self.body_cap:
                raise HttpError("body-too-large", self.body_cap)


# --------------------------------------------------------------------------------------------
# One operation: a fresh instance and what only it may see (its pending requests, its sink).
# --------------------------------------------------------------------------------------------


class Invocation:
    def __init__(self) -> None:
        self.pending: dict[int, PreparedRequest] = {}
        self.next_request_id = 1  # ids are never reused within an instance
        self.sink: Optional[Any] = None  # the open output file of `stream-record`


class ConnectorError(Exception):
    """The export returned `err(connector-error)`."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ConnectorHost:
    def __init__(self, component_path: str, api_base: str, token: str, body_cap: int):
        if body_cap < DEFAULT_BODY_CAP:
            raise ValueError(f"the contract asks for a body cap of at least {DEFAULT_BODY_CAP} bytes")
        if body_cap > MAX_GUEST_BYTE_LIST:
            # A connector sinks chunks of up to the cap; above this one they trap the guest.
            raise ValueError(f"a body cap of {body_cap} bytes is more than this binding can take "
                             f"from a guest in one call ({MAX_GUEST_BYTE_LIST} bytes)")
        config = wasmtime.Config()
        config.wasm_component_model = True
        self.engine = wasmtime.Engine(config)
        install_byte_list_fast_path(self.engine)
        started = time.monotonic()
        self.component = Component.from_file(self.engine, component_path)
        log(f"compiled {component_path} in {time.monotonic() - started:.2f} s")
        self.connector_export = self._check_contract_version()
        self.store = RecordsStore()
        self.http = HttpGateway(api_base, token, body_cap)
        self.body_cap = body_cap
        self.current = Invocation()
        self.linker = Linker(self.engine)
        # WASI: the interfaces a guest's standard library needs, with no capability behind
        # them (see `_new_store`).
        self.linker.add_wasip2()
        self._define_imports()
        self.manifest = self.call("manifest")
        self.http.allowed_hosts = {h.lower() for h in wit_get(self.manifest, "allowed-hosts")}

    def _check_contract_version(self) -> str:
        """The component's `connector` export, if it was built against a compatible version of
        the contract: patch releases are compatible, another minor version (before 1.0) is not,
        and the refusal says which version was found and which is wanted."""
        wanted = interface("connector")
        prefix = f"{CONTRACT_PACKAGE}/connector@"
        found = [name for name in self.component.type.exports(self.engine) if name.startswith(prefix)]
        if not found:
            raise RuntimeError(f"the component does not export {wanted}")
        version = found[0][len(prefix):]
        if version.split(".")[:2] != CONTRACT_VERSION.split(".")[:2]:
            raise RuntimeError(f"the component implements {CONTRACT_PACKAGE}@{version}; "
                               f"this host runs {CONTRACT_PACKAGE}@{CONTRACT_VERSION}")
        return found[0]

    # ---- imports -------------------------------------------------------------------------

    def _define_imports(self) -> None:
        """Every function the world imports, by interface. A host function receives the store
        first, then the WIT parameters; it returns the WIT result. An exception escaping it
        traps the guest (and is raised again from the export call), so expected failures are
        returned as the WIT's error variants instead."""
        funcs: dict[str, dict[str, Callable[..., Any]]] = {
            "types": {},
            "manifest-types": {},
            "http": {"send": self._http_send, "start": self._http_start, "wait": self._http_wait},
            "credentials": {"refresh-access-token": self._refresh_access_token},
            "records": {
                "apply": self._records_apply,
                "get-sync-point": lambda _s: None if self.store.sync_point is None
                else self.store.sync_point["position"],
                "get-records": lambda _s, ids: over_cap(len(ids), "get-records") or [
                    wit_record(record=record_to_wit(e.record), pending_removal=e.pending)
                    for e in self.store.get_records(ids)],
                "list-records": lambda _s, after, limit: over_cap(limit, "list-records limit") or [
                    record_to_wit(r) for r in self.store.list_records(after, limit)],
                "list-shared": self._list_shared,
                "put-owner": self._put_owner,
                "clear": lambda _s: self.store.clear(),
            },
            "paths": {
                "find-by-paths": lambda _s, paths: over_cap(len(paths), "find-by-paths") or [
                    None if r is None else record_to_wit(r) for r in self.store.find_by_paths(paths)],
                "list-subtree": lambda _s, path, after, limit: over_cap(limit, "list-subtree limit") or [
                    record_to_wit(r) for r in self.store.list_subtree(path, after, limit)],
            },
            "content-sink": {"write": self._sink_write},
            "host": {
                "log": lambda _s, level, message: log(f"guest {level}: {message}"),
                # Nothing here shows progress; a platform would put it in its UI.
                "report-progress": lambda _s, p: None,
                # No tenant settings: the connector's defaults apply.
                "config": lambda _s: [],
                "should-stop": lambda _s: False,
                # A real wait, capped at the 5 minutes the contract lets a host cap a sleep at.
                "sleep": lambda _s, ms: time.sleep(min(ms, 300_000) / 1000),
                "limits": lambda _s: wit_record(
                    max_response_body=self.body_cap, default_timeout_ms=DEFAULT_TIMEOUT_MS,
                    max_timeout_ms=MAX_TIMEOUT_MS, max_pending_requests=MAX_PENDING_REQUESTS),
            },
        }
        with self.linker.root() as root:
            for name, functions in funcs.items():
                # Interfaces that only define types are still imported as instances.
                with root.add_instance(interface(name)) as inst:
                    for fname, f in functions.items():
                        inst.add_func(fname, f)

    def _http_send(self, _store: Any, req: Record) -> Any:
        try:
            return self.http.perform(self.http.prepare(req))
        except HttpError as e:
            return e.to_wit()

    def _http_start(self, _store: Any, req: Record) -> Any:
        inv = self.current
        if len(inv.pending) >= MAX_PENDING_REQUESTS:
            return Variant("invalid-request",
                           f"too many pending requests (at most {MAX_PENDING_REQUESTS})")
        try:
            prepared = self.http.prepare(req)
        except HttpError as e:
            return e.to_wit()
        request_id = inv.next_request_id
        inv.next_request_id += 1
        inv.pending[request_id] = prepared  # performed by `wait`
        return request_id

    def _http_wait(self, _store: Any, request_id: int) -> Any:
        prepared = self.current.pending.pop(request_id, None)
        if prepared is None:
            return Variant("invalid-request", f"no pending request has id {request_id}")
        try:
            return self.http.perform(prepared)
        except HttpError as e:
            return e.to_wit()

    def _refresh_access_token(self, _store: Any) -> Any:
        # This host is given an access token and holds no refresh token.
        return Variant("reauthentication-required", "the host holds no refresh token")

    def _list_shared(self, _store: Any) -> Any:
        shared = self.store.list_shared()
        return over_cap(len(shared), "list-shared") or [record_to_wit(r) for r in shared]

    def _records_apply(self, _store: Any, changes: list, sync_point: Optional[Record]) -> Any:
        refused = over_cap(len(changes), "apply")
        if refused is not None:
            return refused
        try:
            return wit_record(**{k.replace("-", "_"): v
                                 for k, v in self.store.apply(changes, sync_point).items()})
        except StoreError as e:
            return e.to_wit()

    def _put_owner(self, _store: Any, owner: Record, group: Record, permissions: list) -> Any:
        refused = over_cap(len(permissions), "put-owner")
        if refused is not None:
            return refused
        self.store.owner = {
            "user": {"external_id": wit_get(owner, "external-id"), "email": owner.email},
            "group": {"external_id": wit_get(group, "external-id"), "name": group.name,
                      "kind": group.kind},
            "permissions": [(wit_get(p, "principal-external-id"), p.role) for p in permissions],
        }
        return None

    def _sink_write(self, _store: Any, chunk: bytes) -> Any:
        inv = self.current
        if inv.sink is None:
            return Variant("closed", "no stream-record is in progress")
        if len(chunk) > self.body_cap:
            return Variant("storage", f"a chunk of {len(chunk)} bytes exceeds the stated "
                                      f"limit of {self.body_cap} bytes")
        try:
            inv.sink.write(chunk)
        except OSError as e:
            return Variant("storage", str(e))
        return None

    # ---- exports -------------------------------------------------------------------------

    def _new_store(self) -> wasmtime.Store:
        store = wasmtime.Store(self.engine)
        wasi = wasmtime.WasiConfig()
        # No preopens, no env, no args (the defaults), stdin empty. The guest's stdout must NOT
        # be inherited: this process's stdout is the protocol channel. Its stderr (a panic
        # message) is passed on to ours, where the logs go.
        wasi.inherit_stderr()
        store.set_wasi(wasi)
        store.set_limits(memory_size=GUEST_MEMORY_CAP)
        return store

    def call(self, export: str, *args: Any, sink: Optional[Any] = None) -> Any:
        """Call one export of the connector in a fresh instance; unwrap `result`s."""
        self.current = Invocation()
        self.current.sink = sink
        store = self._new_store()
        instance = self.linker.instantiate(store, self.component)
        connector = instance.get_export_index(store, self.connector_export)
        index = instance.get_export_index(store, export, connector)
        func = None if index is None else instance.get_func(store, index)
        if func is None:
            raise RuntimeError(f"the component has no export {export}")
        try:
            result = func(store, *args)
        finally:
            self.current = Invocation()
        if export == "manifest":
            return result
        # Every other export returns result<T, connector-error>: ok arrives bare, err as a
        # Variant of connector-error.
        if isinstance(result, Variant):
            payload = result.payload
            message = payload.reason if result.tag == "rate-limited" else str(payload)
            raise ConnectorError(result.tag, message)
        return result

    def stream(self, external_id: str, out_path: str) -> dict:
        with open(out_path, "wb") as out:
            started = time.monotonic()
            summary = self.call("stream-record", external_id, sink=out)
            seconds = time.monotonic() - started
        return {
            "size": summary.size,
            "content_hash": wit_get(summary, "content-hash"),
            "verified": summary.verified,
            "mime_type": wit_get(summary, "mime-type"),
            "seconds": seconds,
        }


# --------------------------------------------------------------------------------------------
# The driver protocol.
# --------------------------------------------------------------------------------------------


def record_json(r: dict) -> dict:
    out = {k.replace("-", "_"): v for k, v in r.items() if k != "path"}
    out["path_display"] = None if r["path"] is None else r["path"]["display"]
    out["path_lower"] = None if r["path"] is None else r["path"]["lower"]
    return out


def handle(host: ConnectorHost, cmd: dict) -> Any:
    op = cmd.get("op")
    if op == "manifest":
        m = host.call("manifest")
        return {"name": m.name, "display_name": wit_get(m, "display-name"),
                "allowed_hosts": list(wit_get(m, "allowed-hosts"))}
    if op == "test-connection":
        user = host.call("test-connection")
        return {"external_id": wit_get(user, "external-id"), "email": user.email,
                "display_name": wit_get(user, "display-name")}
    if op == "sync":
        s = host.call("sync")
        return {"kind": s.kind, "pages": s.pages, "entries": s.entries, "created": s.created,
                "content_updates": wit_get(s, "content-updates"),
                "metadata_updates": wit_get(s, "metadata-updates"), "deletions": s.deletions,
                "api_calls": wit_get(s, "api-calls"), "interrupted": s.interrupted}
    if op == "records":
        return [record_json(r) for r in sorted(host.store.live(), key=lambda r: r["external-id"])]
    if op == "events":
        return host.store.events
    if op == "sync-status":
        point = host.store.sync_point
        return ({"phase": None, "detail": None} if point is None
                else {"phase": point["phase"], "detail": point["detail"]})
    if op == "stream":
        return host.stream(cmd["id"], cmd["out"])
    if op == "signed-url":
        u = host.call("get-signed-url", cmd["id"])
        return {"url": u.url, "expires_at": wit_get(u, "expires-at")}
    if op == "set-token":
        host.http.token = cmd["token"]
        return None
    raise ValueError(f"unknown op {op!r}")


def reply(value: dict) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--component", required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--body-cap", type=int, default=DEFAULT_BODY_CAP)
    args = parser.parse_args()
    try:
        host = ConnectorHost(args.component, args.api_base, args.token, args.body_cap)
    except Exception as e:  # a wrong component, a bad argument: say which, and stop
        log(f"cannot start: {type(e).__name__}: {e}")
        return 2
    log(f"ready: {host.manifest.name}, body cap {args.body_cap} bytes")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            if cmd.get("op") == "quit":
                reply({"ok": None})
                return 0
            started = time.monotonic()
            result = handle(host, cmd)
            log(f"{cmd.get('op')}: {time.monotonic() - started:.2f} s")
            reply({"ok": result})
        except ConnectorError as e:
            reply({"err": {"kind": e.kind, "message": str(e)}})
        except Exception as e:  # a trap or a bug: say so, and keep serving
            log(traceback.format_exc())
            reply({"err": {"kind": "host", "message": f"{type(e).__name__}: {e}"}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
