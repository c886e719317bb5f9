"""``--changed-only``: what this datasource last acknowledged, per key, and what changed since.

The state of one (API URL, project, datasource, target, mapping) is one directory of files,
so that it can be copied to and from object storage by a job that has no disk of its own::

    <state-dir>/changed/<project>.<datasource>.<api-hash>/
        lock                                   held (flock) for the length of one run
        contacts/<mapping-name>/<mapping-hash>/
            state.json                         the manifest: which snapshot is current
            snapshot-<generation>.parquet      key_hash, payload_hash, key; sorted by key_hash
            acks-<run>.log                     this run's acknowledgements, appended as they come
        events/<mapping-name>/<mapping-hash>/…

``<mapping-name>`` is the mapping file's name: another hash under the same name is the same
job's mapping, changed (its state is obsolete once a run with the new one is complete);
another name is another job feeding the same datasource, whose state is left alone.

Files are immutable once written except the manifest, which is replaced atomically
(write, fsync, rename) — the pattern object stores support too (a PUT is atomic).

Why hashes: a run compares every item it would send, so the comparison must be vectorised
and small. Keys and payloads are reduced to 64-bit xxh3 hashes (stable across versions and
machines, unlike polars' own ``hash``); the recorded state is two sorted ``uint64`` arrays
(16 bytes a key in memory) and a batch is looked up with ``numpy.searchsorted``, which costs
O(batch · log state) rather than a hash join's O(state) per batch. A 64-bit collision can
only make the importer *send* an item it could have skipped (payload hashes are compared for
the same key hash), or miss a deletion (a missing key hiding behind a present one): never
skip a changed item in practice (2⁻⁶⁴ per changed item), never delete a wrong contact
(deletions use the stored ``key`` text).

Crash safety: an item enters the log only once the API acknowledged it, and the log is
written (``os.write``, one block per answered request) *before* the journal hears of it, so
the journal never marks a row done whose acknowledgement the state could lose. A killed run
leaves its log behind; the next run folds it into the snapshot first (those items *are* in
the datasource). The end of a run folds its log in and writes a new snapshot.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import xxhash

from importer.exceptions import UsageError
from importer.statelock import StateBusy, StateLock

KEY_HASH, PAYLOAD_HASH, KEY = "key_hash", "payload_hash", "key"
MANIFEST = "state.json"
_SCHEMA = {KEY_HASH: pl.UInt64, PAYLOAD_HASH: pl.UInt64, KEY: pl.String}
_BLOCK = struct.Struct("<cIII")  # op, items, key bytes, crc32 of the rest
_ACK, _GONE = b"A", b"D"

U64 = npt.NDArray[np.uint64]
Status = Literal["recorded", "first", "mapping_changed", "full"]


class StateLocked(UsageError):
    """Another run holds this datasource's changed-only state (exit 2, nothing sent)."""


# ───────────────────────────── hashing ─────────────────────────────


def key_hashes(keys: Sequence[str]) -> U64:
    return np.fromiter(map(xxhash.xxh3_64_intdigest, map(str.encode, keys)), dtype=np.uint64,
                       count=len(keys))


def payload_hashes(bodies: Sequence[bytes]) -> U64:
    """The exact bytes that were (or would be) sent."""
    return np.fromiter(map(xxhash.xxh3_64_intdigest, bodies), dtype=np.uint64,
                       count=len(bodies))


# ───────────────────────────── where and the lock ─────────────────────────────


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:60] or "_"


@dataclass(frozen=True, slots=True)
class StateKey:
    """What a recorded state belongs to."""

    api_url: str
    project: str
    datasource: str
    target: str
    mapping_sha256: str
    mapping_name: str = "mapping"

    def scope_dir(self, root: str | Path) -> Path:
        """The datasource's directory (the lock lives here: one run per datasource)."""
        api = hashlib.sha256(self.api_url.rstrip("/").encode()).hexdigest()[:8]
        return Path(root) / "changed" / f"{_safe(self.project)}.{_safe(self.datasource)}.{api}"

    def dir(self, root: str | Path) -> Path:
        return (self.scope_dir(root) / self.target / _safe(self.mapping_name)
                / self.mapping_sha256[:16])


def acquire_lock(directory: Path, what: str) -> StateLock:
    """Lock ``directory`` for this run, or raise :class:`StateLocked` at once (no waiting).

    The same ``flock`` as the run's own lock on the state directory
    (:class:`importer.statelock.StateLock`): released by the kernel when the process dies.
    """
    lock = StateLock(directory)
    try:
        lock.acquire()
    except StateBusy as busy:
        pid, since = busy.holder.get("pid"), busy.holder.get("started")
        holder = f"pid {pid} since {since}" if pid else "another process"
        raise StateLocked(
            f"another run is using the changed-only state of {what} ({holder}); "
            "wait for it to finish — two runs at once would record each other's items "
            f"(lock: {lock.path})") from None
    return lock


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ───────────────────────────── files ─────────────────────────────


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


def _snapshot_path(directory: Path) -> Path | None:
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    return directory / str(manifest["snapshot"])


class AckLog:
    """This run's acknowledgements (and deletions), one checksummed block per write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.items = 0

    def append(self, keys: Sequence[str], bodies: Sequence[bytes] | None) -> None:
        """Acknowledged items (``bodies``), or contacts gone from the datasource (None)."""
        if not keys:
            return
        encoded = [k.encode() for k in keys]
        kh = np.fromiter(map(xxhash.xxh3_64_intdigest, encoded), np.uint64, len(encoded))
        ph = payload_hashes(bodies) if bodies is not None else np.zeros(len(keys), np.uint64)
        offsets = np.zeros(len(keys) + 1, np.uint32)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        rest = kh.tobytes() + ph.tobytes() + offsets.tobytes() + b"".join(encoded)
        op = _ACK if bodies is not None else _GONE
        head = _BLOCK.pack(op, len(keys), int(offsets[-1]), zlib.crc32(rest))
        os.write(self._fd, head + rest)  # one write: a kill leaves a whole block or a torn tail
        self.items += len(keys)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True, slots=True)
class _LogColumns:
    """A log as whole columns, in write order (keys: one Arrow string array)."""

    kh: U64
    ph: U64
    ack: npt.NDArray[np.bool_]
    keys: Any  # pyarrow.LargeStringArray


def _read_columns(paths: Sequence[Path]) -> _LogColumns:
    """Blocks in order; a torn or corrupt tail (a killed writer) ends a log.

    Whole columns over the blocks' bytes, not a frame per block nor a str per key: a first
    night's log holds millions of keys, and its compaction must stay small.
    """
    import pyarrow as pa

    kh: list[U64] = []
    ph: list[U64] = []
    ack: list[npt.NDArray[np.bool_]] = []
    ends: list[npt.NDArray[np.int64]] = []
    blobs: list[memoryview] = []
    base = 0
    datas = [path.read_bytes() for path in paths]
    for data in datas:
        view, pos = memoryview(data), 0
        while pos + _BLOCK.size <= len(data):
            op, n, key_bytes, crc = _BLOCK.unpack_from(data, pos)
            start = pos + _BLOCK.size
            end = start + 16 * n + 4 * (n + 1) + key_bytes
            if end > len(data) or zlib.crc32(view[start:end]) != crc:
                break
            kh.append(np.frombuffer(data, np.uint64, n, start))
            ph.append(np.frombuffer(data, np.uint64, n, start + 8 * n))
            offsets = np.frombuffer(data, np.uint32, n + 1, start + 16 * n)
            ends.append(offsets[1:].astype(np.int64) + base)
            blobs.append(view[start + 16 * n + 4 * (n + 1):end])
            ack.append(np.full(n, op == _ACK))
            base += key_bytes
            pos = end
    if not kh:
        empty = np.zeros(0, np.uint64)
        return _LogColumns(empty, empty, np.zeros(0, np.bool_), pa.array([], pa.large_string()))
    offsets_all = np.concatenate([np.zeros(1, np.int64), *ends])
    keys = pa.LargeStringArray.from_buffers(
        len(offsets_all) - 1, pa.py_buffer(offsets_all), pa.py_buffer(b"".join(blobs)))
    return _LogColumns(np.concatenate(kh), np.concatenate(ph), np.concatenate(ack), keys)


def read_log(path: Path) -> pl.DataFrame:
    """One log as a frame (inspection, tests): key_hash, payload_hash, key, ack."""
    cols = _read_columns([path])
    return pl.DataFrame({KEY_HASH: cols.kh, PAYLOAD_HASH: cols.ph,
                         KEY: pl.Series(KEY, cols.keys).cast(pl.String), "ack": cols.ack})


def _last_acks(cols: _LogColumns, keep_keys: bool) -> tuple[U64, pl.DataFrame]:
    """The key hashes the logs touched (sorted), and the acknowledged items among their last
    writes, sorted by key hash: a stable sort keeps each key's writes in log order."""
    order = np.argsort(cols.kh, kind="stable")
    sorted_kh = cols.kh[order]
    last = np.ones(len(order), np.bool_)
    last[:-1] = sorted_kh[1:] != sorted_kh[:-1]
    final = order[last]
    acked = final[cols.ack[final]]
    keys = (pl.Series(KEY, cols.keys.take(acked)).cast(pl.String) if keep_keys
            else pl.Series(KEY, [None] * len(acked), pl.String))
    fresh = pl.DataFrame({KEY_HASH: cols.kh[acked], PAYLOAD_HASH: cols.ph[acked], KEY: keys})
    return sorted_kh[last], fresh


def compact(directory: Path, manifest_extra: dict[str, Any], *, rebuild: bool = False,
            keep_keys: bool = True) -> int:
    """Fold the logs of ``directory`` into a new snapshot; returns the recorded count.

    ``rebuild``: the new snapshot holds only what the logs hold (``--full``).
    """
    logs = sorted(directory.glob("acks-*.log"))
    old = _snapshot_path(directory)
    if not logs and not rebuild and old is not None:
        return int(read_manifest(directory)["rows"])  # type: ignore[index]
    touched, fresh = _last_acks(_read_columns(logs), keep_keys)
    generation = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    name = f"snapshot-{generation}.parquet"
    tmp = directory / f".{name}.tmp"
    if old is not None and old.exists() and not rebuild:
        # Streamed: the recorded keys minus those the logs touched, merged in key-hash order
        # with the logs' acknowledgements (10M keys: ~1.5 s and ~150 MB, not a 480 MB frame).
        kept = pl.scan_parquet(old).filter(~pl.col(KEY_HASH).is_in(pl.Series(touched).implode()))
        kept.merge_sorted(fresh.lazy(), key=KEY_HASH).sink_parquet(
            tmp, compression="zstd", statistics=False)
    else:
        fresh.write_parquet(tmp, compression="zstd", statistics=False)
    rows = int(pl.scan_parquet(tmp).select(pl.len()).collect().item())
    os.chmod(tmp, 0o600)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, directory / name)
    manifest = {**manifest_extra, "snapshot": name, "rows": rows, "updated": _now()}
    _write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2).encode())
    for path in logs:
        path.unlink()
    # the previous snapshot, and any a killed compaction wrote but never named current
    for path in [*directory.glob("snapshot-*.parquet"), *directory.glob(".snapshot-*.tmp")]:
        if path.name != name:
            path.unlink(missing_ok=True)
    return rows


# ───────────────────────────── one target's state in a run ─────────────────────────────


@dataclass
class TargetState:
    """The recorded state of one target, loaded for comparison."""

    key: StateKey
    directory: Path
    status: Status
    arrays: tuple[U64, U64] | None  # recorded key hashes (sorted) and their payload hashes
    snapshot: Path | None
    log: AckLog | None = None
    unchanged: int = 0
    sent: int = 0
    seen: npt.NDArray[np.bool_] | None = None  # per recorded key: in today's input

    @property
    def recorded(self) -> int:
        return len(self.arrays[0]) if self.arrays is not None else 0

    @property
    def skips(self) -> bool:
        """Whether items are compared at all (not on a first run, a new mapping, --full)."""
        return self.status == "recorded" and self.arrays is not None

    def _find(self, keys: Sequence[str]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        assert self.arrays is not None
        recorded_k = self.arrays[0]
        kh = key_hashes(keys)
        if not len(recorded_k):
            return np.zeros(len(kh), np.intp), np.zeros(len(kh), np.bool_)
        # Looked up in sorted order: the binary searches then walk the recorded array
        # forwards (3× faster on 10M keys than random probes, which miss the cache).
        order = np.argsort(kh)
        at = np.empty(len(kh), np.intp)
        at[order] = np.searchsorted(recorded_k, kh[order])
        np.minimum(at, len(recorded_k) - 1, out=at)
        return at, recorded_k[at] == kh

    def compare(self, keys: Sequence[str], bodies: Sequence[bytes]) -> npt.NDArray[np.bool_]:
        """Which items to send: new keys, and (contacts) keys whose payload changed.

        An acknowledged event id is never sent again: events are immutable once accepted.
        """
        n = len(keys)
        if not self.skips or n == 0:
            self.sent += n
            return np.ones(n, np.bool_)
        assert self.arrays is not None
        at, found = self._find(keys)
        if self.key.target == "events":
            keep = ~found
        else:
            keep = ~(found & (self.arrays[1][at] == payload_hashes(bodies)))
        sent = int(keep.sum())
        self.sent += sent
        self.unchanged += n - sent
        return keep

    def mark_seen(self, keys: Sequence[str]) -> None:
        """Note keys present in today's input (``--delete-missing``)."""
        if self.seen is None or not keys:
            return
        at, found = self._find(keys)
        self.seen[at[found]] = True

    def missing_keys(self) -> list[str]:
        """Recorded keys that no row of today's input has."""
        if self.seen is None or self.arrays is None or self.snapshot is None:
            return []
        gone = self.arrays[0][~self.seen]
        if not len(gone):
            return []
        found = (
            pl.scan_parquet(self.snapshot)
            .filter(pl.col(KEY_HASH).is_in(pl.Series(gone).implode()))
            .select(KEY).collect()
        )
        return sorted(k for k in found[KEY].to_list() if k is not None)


def load_state(root: str | Path, key: StateKey, *, full: bool = False, write: bool = True,
               track_seen: bool = False) -> TargetState:
    """Open one target's state. ``write``: fold a killed run's log in first."""
    directory = key.dir(root)
    if write:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(directory.glob("acks-*.log")):  # a killed run: its acks are in the datasource
            compact(directory, manifest_of(key), keep_keys=key.target == "contacts")
    snapshot = _snapshot_path(directory)
    arrays: tuple[U64, U64] | None = None
    if snapshot is not None and snapshot.exists():
        kh, ph = _read_hashes(snapshot)
        if len(kh) > 1 and not bool(np.all(kh[1:] >= kh[:-1])):
            order = np.argsort(kh, kind="stable")
            kh, ph = kh[order], ph[order]
        arrays = (kh, ph)
        status: Status = "full" if full else "recorded"
    elif any((s / MANIFEST).exists() for s in _siblings(directory)):
        status = "mapping_changed"
    else:
        status = "first"
    state = TargetState(key, directory, status, arrays, snapshot)
    if track_seen and arrays is not None:
        state.seen = np.zeros(len(arrays[0]), np.bool_)
    return state


def _read_hashes(snapshot: Path) -> tuple[U64, U64]:
    """The two hash columns, batch by batch into arrays allocated once: reading the whole
    table then converting it holds both copies at once (10M keys: 390 MB peak instead of
    260; pyarrow's reader, whose pool keeps its buffers, 480)."""
    frame = pl.scan_parquet(snapshot).select(KEY_HASH, PAYLOAD_HASH)
    n = int(frame.select(pl.len()).collect().item())
    kh, ph = np.empty(n, np.uint64), np.empty(n, np.uint64)
    at = 0
    for batch in frame.collect_batches():
        m = batch.height
        kh[at:at + m] = batch[KEY_HASH].to_numpy()
        ph[at:at + m] = batch[PAYLOAD_HASH].to_numpy()
        at += m
    return kh[:at], ph[:at]


def _siblings(directory: Path) -> list[Path]:
    """State directories of the same datasource and target, for other mappings."""
    if not directory.parent.is_dir():
        return []
    return [p for p in directory.parent.iterdir() if p.is_dir() and p != directory]


def drop_other_mappings(directory: Path) -> None:
    """After a complete run with a new mapping, the old mappings' states are obsolete."""
    for path in _siblings(directory):
        shutil.rmtree(path, ignore_errors=True)


def manifest_of(key: StateKey) -> dict[str, Any]:
    """What a state's manifest says it belongs to (beside its snapshot and count)."""
    return {"api_url": key.api_url, "project": key.project, "datasource": key.datasource,
            "target": key.target, "mapping": key.mapping_name,
            "mapping_sha256": key.mapping_sha256, "format": 1}


# ───────────────────────────── max delete ─────────────────────────────


@dataclass(frozen=True, slots=True)
class MaxDelete:
    """``--max-delete``: a count (``500``) or a share of the recorded contacts (``5%``)."""

    count: int | None = None
    percent: float = 5.0

    @classmethod
    def parse(cls, text: str) -> MaxDelete:
        t = text.strip()
        try:
            if t.endswith("%"):
                pct = float(t[:-1])
                if not 0 <= pct <= 100:
                    raise ValueError
                return cls(None, pct)
            count = int(t)
            if count < 0:
                raise ValueError
            return cls(count)
        except ValueError:
            raise UsageError(f"--max-delete {text!r}: expected a count such as 500 or a "
                             "percentage of the recorded contacts such as 5%") from None

    def limit(self, recorded: int) -> int:
        if self.count is not None:
            return self.count
        return int(recorded * self.percent / 100)

    def describe(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"
