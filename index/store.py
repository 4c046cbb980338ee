"""The versioned artifact store: FASCL_HOME/indexes/<version>/, published atomically, verified on load.

On disk (one directory per published version; names starting with "." are never versions):

    indexes/
      <version>/                      e.g. us_nasdaq-small-1a2b3c4d-20251125T033012
        manifest.json                 what was published: model, data, dates, counts, tickers, checksums
        manifest.sha256               sha256 of manifest.json (the index_versions.checksum in SQL)
        ids/<YYYY-MM-DD>.npy          int32 (n,) asset ids, ascending, into the manifest's ticker table
        vectors/<YYYY-MM-DD>.npy      a flat date's vectors, float32 or float16 (manifest index.vector_dtype),
                                      (n, d), unit length or inside the unit ball (mmap-able); its exact
                                      index is built from them when the date is loaded
        faiss/<YYYY-MM-DD>.faiss      an approximate date's IndexIDMap2 (hnsw or ivf), ids = asset ids; it
                                      holds the date's vectors, which are read back from it
        neighbors/<YYYY-MM-DD>.npy    (n, K) of (id int32, score float32): each asset's exact top-K
                                      others, best first, rows in ids order (manifest index.neighbors =
                                      K; absent when 0 or the date has more than 20,000 assets)
      Each vector is stored once. Format 1 (still read) also kept a flat date's vectors inside a
      faiss/ file beside vectors/, twice the disk for the same numbers.
      A version built from an earlier one holds copies of the files of the dates it took over (never
      hard links: damage to a shared inode would reach every version that holds it).
      .staging/<build key>/           an unfinished build: the same layout plus build.json and
                                      progress.jsonl (one line per finished date); a rerun resumes it
      .trash-<version>/               a pruned version on its way out (renamed first, then deleted)

Publishing: every file is written to a temp name and renamed inside the staging directory, its
sha256 recorded as it is written; files are fsynced in batches before their dates are recorded as
done (so a resumed build trusts only durable dates); then the manifest is written and fsynced, the directory is
fsynced and renamed to indexes/<version> in one step, and indexes/ is fsynced. A reader lists only
directories holding a manifest, so it never sees a half-written version.

Loading: the manifest's own checksum is checked on open; every other file is checked against the
manifest (size, then sha256) before it is first read — all at open for small versions, lazily per
date for large ones — and `verify()` checks all of them. A mismatch raises `IndexCorruptError`
naming the file and what was expected.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from index.errors import IndexCorruptError, IndexStoreError, VersionNotFound

FORMAT = "fascl-index/2"
READABLE_FORMATS = ("fascl-index/1", FORMAT)
# float16 halves a flat date's vector file; scores of searched queries then carry its rounding
# (bench/export_speed.py measures recall@10 against float32). The stored top-K tables are computed
# from the rounded vectors, so a lookup and a search of the same date agree.
VECTOR_DTYPES = ("float32", "float16")
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"
STAGING = ".staging"
TRASH = ".trash-"
LOCK = ".lock"
SERVED_FILE = (
    ".served"  # the version a service last served on SQL's word: what it serves when SQL cannot be read
)
# Versions up to this size are verified in full when opened; larger ones date by date on first use.
EAGER_VERIFY_BYTES = 256 * 2**20
_CHUNK = 4 * 2**20
SUBDIRS = ("vectors", "ids", "faiss", "neighbors")
DEFAULT_KEEP = 3  # versions a prune keeps unless told otherwise


# ----------------------------------------------------------------- file helpers
def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_file(source: Path, target: Path) -> None:
    """Copy in the kernel with copy_file_range (extents shared where the file system has reflinks),
    falling back to a plain copy where the call is unsupported (another file system, an old kernel)."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        remaining = os.fstat(src.fileno()).st_size
        try:
            while remaining > 0:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), remaining)
                if copied == 0:
                    break
                remaining -= copied
        except OSError:
            src.seek(0)
            dst.seek(0)
            dst.truncate()
            shutil.copyfileobj(src, dst, _CHUNK)


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes | memoryview, *, sync: bool = True) -> dict:
    """Write `data` to `path` via a temp name and rename (fsynced first unless `sync` is False,
    for callers that fsync many files at once with `fsync_paths`); return its {sha256, bytes}."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(memoryview(data).cast("B"))}


def fsync_paths(paths: list[Path], workers: int = 8) -> None:
    """fsync many files; concurrent calls share journal commits (about 10x faster than one by one)."""

    def sync(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    with ThreadPoolExecutor(max_workers=min(workers, max(1, len(paths)))) as pool:
        list(pool.map(sync, paths))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def utcnow_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def unique_bytes(paths: Iterable[Path]) -> int:
    """Bytes of the files under `paths`, each inode once (versions published before reused dates were
    copied share them as hard links)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in paths:
        for file in Path(root).rglob("*"):
            st = file.stat()
            if file.is_file() and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# --------------------------------------------------------------------- staging
def finished_dates(path: Path) -> dict[str, dict]:
    """The finished dates of the staging directory at `path` -> their record (count, kind, files with
    checksums), as written: those whose progress line and files are whole. Reads only (no lock)."""
    records: dict[str, dict] = {}
    progress = Path(path) / "progress.jsonl"
    if not progress.exists():
        return records
    for line in progress.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by a crash: that date is simply redone
            continue
        files_ok = all(
            (path / rel).is_file() and (path / rel).stat().st_size == meta["bytes"]
            for rel, meta in record["files"].items()
        )
        if files_ok:
            records[record["date"]] = record
    return records


class Staging:
    """An unfinished build: per-date files written durably, one progress line per finished date.

    `spec` identifies the build (checkpoint, data, date range, index kind, ticker table); a staging
    directory holding another spec is discarded, so a resume never mixes two builds."""

    def __init__(self, path: Path, spec: dict):
        self.path = Path(path)
        self.spec = spec
        self._progress = self.path / "progress.jsonl"
        self._pending: list[dict] = []
        spec_file = self.path / "build.json"
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / LOCK, "w")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise IndexStoreError(f"another build is writing {self.path}; wait for it or stop it") from None
        try:
            same = json.loads(spec_file.read_text()) == json.loads(json.dumps(spec))
        except (OSError, ValueError):
            same = False
        if not same:  # another build's leftovers (or nothing): start clean
            for child in self.path.iterdir():
                if child.name != LOCK:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        for sub in SUBDIRS:
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        if not spec_file.exists():
            write_file(spec_file, json.dumps(spec, indent=1).encode())
            fsync_dir(self.path)

    def close(self) -> None:
        """Release the build lock (the staging directory stays for a later resume)."""
        if not self._lock.closed:
            self._lock.close()

    def done(self) -> dict[str, dict]:
        """Finished dates -> their record (count, kind, files with checksums), as written."""
        return finished_dates(self.path)

    def write_date(
        self,
        date: str,
        ids: np.ndarray,
        kind: str,
        *,
        vectors: np.ndarray | None = None,
        index_bytes=None,
        window: str | None = None,
        neighbors: np.ndarray | None = None,
    ) -> dict:
        """Write one date's ids with either its vectors (a flat date, in the dtype given) or its serialised
        approximate index, which holds them (temp name + rename, not yet fsynced).

        The date counts as done only after `commit()`, which fsyncs its files and then appends its
        progress line: a crash can lose uncommitted dates, never record a date whose bytes are not
        on disk."""
        if (vectors is None) == (index_bytes is None):
            raise ValueError("a date stores either its vectors (flat) or its index (approximate), once")
        if vectors is not None and vectors.dtype.name not in VECTOR_DTYPES:
            raise ValueError(f"vectors must be one of {', '.join(VECTOR_DTYPES)}, not {vectors.dtype}")
        parts = [(f"ids/{date}.npy", npy_bytes(ids.astype(np.int32, copy=False)))]
        if vectors is not None:
            parts.append((f"vectors/{date}.npy", npy_bytes(vectors)))
        else:
            parts.append((f"faiss/{date}.faiss", index_bytes))
        if neighbors is not None:
            parts.append((f"neighbors/{date}.npy", npy_bytes(neighbors)))
        files = {rel: write_file(self.path / rel, data, sync=False) for rel, data in parts}
        record = {"date": date, "count": int(len(ids)), "kind": kind, "files": files, "window": window}
        self._pending.append(record)
        return record

    def copy_date(self, date: str, source: IndexVersion, window: str | None = None) -> dict:
        """Take one date's files from a published version as copies, each checked against the source's
        manifest after copying: a corrupt file is never carried on.

        Copies, not hard links: a link would share one inode between versions, so damage to a reused
        file would reach every version holding it and rolling back would not help. The copy is made
        in the kernel (copy_file_range), which shares extents on file systems that support reflinks
        (XFS, Btrfs) and copies elsewhere."""
        pos = source.position(date)
        files = {}
        for rel in source.date_files(date).values():
            meta = source.files.get(rel)
            if meta is None:
                raise IndexCorruptError(source.path / rel, "not listed in the manifest")
            target = self.path / rel
            target.unlink(missing_ok=True)
            try:
                copy_file(source.path / rel, target)
            except FileNotFoundError:
                raise IndexCorruptError(
                    source.path / rel, "missing", f"{meta['bytes']} bytes", "no file"
                ) from None
            size, digest = target.stat().st_size, sha256_file(target)
            if size != meta["bytes"] or digest != meta["sha256"]:
                target.unlink()
                raise IndexCorruptError(
                    source.path / rel, "checksum mismatch", f"sha256 {meta['sha256']}", f"sha256 {digest}"
                )
            files[rel] = dict(meta)
        record = {
            "date": date,
            "count": int(source.counts[pos]),
            "kind": source.kinds[pos],
            "files": files,
            "window": window,
        }
        self._pending.append(record)
        return record

    def adopt(self, other: Staging) -> dict[str, dict]:
        """Move the finished dates of `other` (a staging directory of the same build written by another
        process, a rank of a distributed build) into this one, as pending dates; returns their
        records. Renames within one file system: no byte is copied, and a date is either here or there."""
        if json.loads(json.dumps(other.spec)) != json.loads(json.dumps(self.spec)):
            raise IndexStoreError(f"{other.path} holds another build than {self.path}")
        adopted = other.done()
        for record in adopted.values():
            for rel in record["files"]:
                os.replace(other.path / rel, self.path / rel)
            self._pending.append(record)
        return adopted

    def commit(self) -> int:
        """Make the dates written since the last commit durable and record them; returns how many."""
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        paths = [self.path / rel for record in pending for rel in record["files"]]
        fsync_paths(paths)
        for sub in SUBDIRS:
            fsync_dir(self.path / sub)
        with open(self._progress, "a") as fh:
            fh.write("".join(json.dumps(record) + "\n" for record in pending))
            fh.flush()
            os.fsync(fh.fileno())
        return len(pending)


# ---------------------------------------------------------------------- versions
@dataclass
class VersionInfo:
    """One row of `list_versions()`: read from the manifest, without touching the data files."""

    version: str
    path: Path
    created: str = ""
    model_version: str = ""
    first_date: str | None = None
    last_date: str | None = None
    n_dates: int = 0
    vectors: int = 0
    bytes: int = 0
    dim: int = 0
    kinds: list[str] = field(default_factory=list)
    error: str | None = None  # set when the manifest itself cannot be read

    @property
    def readable(self) -> bool:
        return self.error is None


class IndexVersion:
    """One published version, opened: its manifest, and checked access to its files."""

    def __init__(self, path: Path, *, verify: str = "auto"):
        self.path = Path(path)
        self.version = self.path.name
        self.manifest, self.manifest_sha256 = _read_manifest(self.path)
        m = self.manifest
        self.dim = int(m["dim"])
        self.dates = np.array(m["dates"], dtype="datetime64[D]")
        self.counts = np.array(m["counts"], dtype=np.int64)
        self.kinds: list[str] = list(m["kinds"])
        self.files: dict[str, dict] = m["files"]
        self.format: str = m["format"]
        self.vector_dtype: str = m["index"].get("vector_dtype", "float32")
        self._date_pos = {d: i for i, d in enumerate(m["dates"])}
        self._verified: set[str] = set()
        self._lock = threading.Lock()
        if verify not in ("auto", "all", "lazy"):
            raise ValueError(f"verify must be auto, all or lazy, not {verify!r}")
        if verify == "all" or (verify == "auto" and self.data_bytes <= EAGER_VERIFY_BYTES):
            self.verify_all()

    # ------------------------------------------------------------- metadata
    @property
    def data_bytes(self) -> int:
        return int(sum(meta["bytes"] for meta in self.files.values()))

    @property
    def model_version(self) -> str:
        return self.manifest["model"]["version"]

    @property
    def query_prior(self) -> bool:
        """Whether the vectors' last coordinate is a candidate prior, read as 1 by queries
        (index.ann.as_queries); versions from models without one say nothing and are False."""
        return bool(self.manifest["model"].get("query_prior", False))

    def assets(self) -> pd.DataFrame:
        """The ticker table: asset id = row position; ticker, name, sector, industry, exchange, coverage."""
        return pd.DataFrame(self.manifest["tickers"])

    def date_files(self, date: str) -> dict[str, str]:
        """The date's files by part (ids, vectors, index, neighbors), those it has."""
        files = {"ids": f"ids/{date}.npy"}
        for part, rel in (
            ("vectors", f"vectors/{date}.npy"),
            ("index", f"faiss/{date}.faiss"),
            ("neighbors", f"neighbors/{date}.npy"),
        ):
            if rel in self.files:
                files[part] = rel
        return files

    def position(self, date) -> int:
        """The date's row in the manifest's per-date lists (dates, counts, kinds, windows)."""
        return self._date_pos[self.date_key(date)]

    def date_key(self, date) -> str:
        key = str(np.datetime64(date, "D"))
        if key not in self._date_pos:
            raise KeyError(f"{key} is not an indexed date of version {self.version}")
        return key

    # --------------------------------------------------------------- verify
    def verify_file(self, rel: str, *, force: bool = False) -> None:
        """Check one manifest-listed file (size, then sha256); raise IndexCorruptError on a mismatch."""
        if rel in self._verified and not force:
            return
        meta = self.files.get(rel)
        if meta is None:
            raise IndexCorruptError(self.path / rel, "not listed in the manifest")
        file = self.path / rel
        if not file.is_file():
            raise IndexCorruptError(file, "missing", f"{meta['bytes']} bytes", "no file")
        size = file.stat().st_size
        if size != meta["bytes"]:
            problem = "truncated" if size < meta["bytes"] else "wrong size"
            raise IndexCorruptError(file, problem, f"{meta['bytes']} bytes", f"{size} bytes")
        digest = sha256_file(file)
        if digest != meta["sha256"]:
            raise IndexCorruptError(file, "checksum mismatch", f"sha256 {meta['sha256']}", f"sha256 {digest}")
        with self._lock:
            self._verified.add(rel)

    def verify_date(self, date, parts: Iterable[str] | None = None) -> None:
        """Check the date's files (`parts` of vectors, ids, index, neighbors; default all it has)."""
        files = self.date_files(self.date_key(date))
        for part in files if parts is None else parts:
            self.verify_file(files[part])

    def read_checked(self, rel: str) -> bytes:
        """The whole file, checked (size, then sha256) on the very bytes returned.

        What the query side serves is parsed from these bytes, never from the file again, so a file
        damaged after it was checked cannot be served: it is refused with IndexCorruptError the next
        time it is read, and what is in memory is what was checked."""
        meta = self.files.get(rel)
        if meta is None:
            raise IndexCorruptError(self.path / rel, "not listed in the manifest")
        file = self.path / rel
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise IndexCorruptError(file, "missing", f"{meta['bytes']} bytes", "no file") from None
        if len(data) != meta["bytes"]:
            problem = "truncated" if len(data) < meta["bytes"] else "wrong size"
            raise IndexCorruptError(file, problem, f"{meta['bytes']} bytes", f"{len(data)} bytes")
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta["sha256"]:
            raise IndexCorruptError(file, "checksum mismatch", f"sha256 {meta['sha256']}", f"sha256 {digest}")
        with self._lock:
            self._verified.add(rel)
        return data

    def verify_all(self, *, force: bool = False) -> None:
        for rel in self.files:
            self.verify_file(rel, force=force)

    def size_problems(self) -> list[IndexCorruptError]:
        """Missing or wrongly sized files (a stat per file, no hashing): the quick check of `list`."""
        found = []
        for rel, meta in self.files.items():
            file = self.path / rel
            size = file.stat().st_size if file.is_file() else None
            if size != meta["bytes"]:
                problem = (
                    "missing" if size is None else ("truncated" if size < meta["bytes"] else "wrong size")
                )
                found.append(IndexCorruptError(file, problem, f"{meta['bytes']} bytes", f"{size} bytes"))
        return found

    def problems(self) -> list[IndexCorruptError]:
        """Every corrupt file (full checksums, nothing cached), rather than stopping at the first."""
        found = []
        for rel in self.files:
            try:
                self.verify_file(rel, force=True)
            except IndexCorruptError as exc:
                found.append(exc)
        return found

    # ----------------------------------------------------------------- read
    def read_vectors(self, date, *, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(asset ids int32 (n,), vectors float32 (n, d)) of one date. A flat date's float32 vectors
        are memory-mapped after a checksum of the file, or with `mmap=False` parsed from the checked
        bytes themselves (float16 ones are widened, a copy); an approximate date's are read back from
        its index."""
        key = self.date_key(date)
        files = self.date_files(key)
        ids = np.load(io.BytesIO(self.read_checked(files["ids"])))
        if "vectors" not in files:
            vectors = self._index_vectors(key, ids)
        elif mmap:
            self.verify_file(files["vectors"])
            vectors = np.load(self.path / files["vectors"], mmap_mode="r")
        else:
            vectors = self._parse_npy(files["vectors"])
        rel = files.get("vectors", files.get("index"))
        if vectors.shape != (len(ids), self.dim):
            raise IndexCorruptError(
                self.path / rel, "shape mismatch", f"({len(ids)}, {self.dim})", str(vectors.shape)
            )
        if vectors.dtype != np.float32:
            if vectors.dtype.name not in VECTOR_DTYPES:
                raise IndexCorruptError(
                    self.path / rel, "wrong dtype", " or ".join(VECTOR_DTYPES), str(vectors.dtype)
                )
            vectors = vectors.astype(np.float32)
        return ids, vectors

    def _index_vectors(self, key: str, ids: np.ndarray) -> np.ndarray:
        """An approximate date's vectors, reconstructed from its index in asset-id order."""
        import faiss

        index = self.read_index(key)
        if not np.array_equal(faiss.vector_to_array(index.id_map), ids):
            raise IndexCorruptError(
                self.path / self.date_files(key)["index"], "ids differ from the date's ids file"
            )
        return index.index.reconstruct_n(0, index.ntotal)

    def _parse_npy(self, rel: str) -> np.ndarray:
        try:
            return np.load(io.BytesIO(self.read_checked(rel)), allow_pickle=False)
        except ValueError as exc:  # checksummed yet unreadable: written wrong, still not servable
            raise IndexCorruptError(self.path / rel, f"not a readable .npy ({exc})") from None

    def read_neighbors(self, date) -> np.ndarray | None:
        """The date's stored neighbor table ((n, K) of id, score), parsed from its checked bytes, or None
        if it has none."""
        key = self.date_key(date)
        rel = self.date_files(key).get("neighbors")
        if rel is None:
            return None
        table = self._parse_npy(rel)
        expected = (int(self.counts[self._date_pos[key]]), int(self.manifest["index"].get("neighbors", 0)))
        if table.shape != expected:
            raise IndexCorruptError(self.path / rel, "shape mismatch", str(expected), str(table.shape))
        return table

    def read_index(self, date):
        """The date's faiss index, in memory: an approximate date's deserialised from its checked bytes,
        a flat date's built from its checked vectors (a file changed on disk afterwards changes
        nothing that is served)."""
        import faiss

        key = self.date_key(date)
        files = self.date_files(key)
        if "index" not in files:
            from index.ann import build_index

            ids, vectors = self.read_vectors(key, mmap=False)
            return build_index(vectors, ids, "flat", use_gpu=False)
        rel = files["index"]
        data = self.read_checked(rel)
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexCorruptError(self.path / rel, f"faiss cannot read it ({exc})") from exc
        expected = int(self.counts[self._date_pos[key]])
        if index.ntotal != expected or index.d != self.dim:
            raise IndexCorruptError(
                self.path / rel,
                "index size mismatch",
                f"{expected} x {self.dim}",
                f"{index.ntotal} x {index.d}",
            )
        return index


def _read_manifest(path: Path) -> tuple[dict, str]:
    file, sum_file = path / MANIFEST, path / MANIFEST_SUM
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise IndexCorruptError(file, "missing", "a manifest", "no file") from None
    digest = hashlib.sha256(raw).hexdigest()
    try:
        expected = sum_file.read_text().split()[0]
    except (FileNotFoundError, IndexError):
        raise IndexCorruptError(sum_file, "missing or empty", "the manifest's sha256", "nothing") from None
    if digest != expected:
        raise IndexCorruptError(file, "checksum mismatch", f"sha256 {expected}", f"sha256 {digest}")
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise IndexCorruptError(file, f"not JSON ({exc})") from None
    if manifest.get("format") not in READABLE_FORMATS:
        raise IndexCorruptError(
            file, "unknown format", " or ".join(READABLE_FORMATS), str(manifest.get("format"))
        )
    return manifest, digest


# ------------------------------------------------------------------------ store
class IndexStore:
    """Versioned index directories under `root`; `keep` is how many versions a prune keeps, newest
    first (the jobs pass FASCL_INDEX_KEEP)."""

    def __init__(self, root: str | Path, keep: int = DEFAULT_KEEP):
        self.root = Path(root)
        self.keep = int(keep)

    # -------------------------------------------------------------- listing
    def _version_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def list_versions(self) -> list[VersionInfo]:
        """Published versions, oldest first (by creation time, then name)."""
        infos = []
        for path in self._version_dirs():
            if not (path / MANIFEST).exists() and not (path / MANIFEST_SUM).exists():
                continue  # not ours
            info = VersionInfo(path.name, path)
            try:
                manifest, _ = _read_manifest(path)
                info.created = manifest["created"]
                info.model_version = manifest["model"]["version"]
                info.first_date = manifest["dates"][0] if manifest["dates"] else None
                info.last_date = manifest["dates"][-1] if manifest["dates"] else None
                info.n_dates = len(manifest["dates"])
                info.vectors = int(sum(manifest["counts"]))
                info.bytes = int(sum(m["bytes"] for m in manifest["files"].values()))
                info.dim = int(manifest["dim"])
                info.kinds = sorted(set(manifest["kinds"]))
            except (IndexCorruptError, KeyError, TypeError) as exc:
                info.error = str(exc)
                info.created = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                )
            infos.append(info)
        return sorted(infos, key=lambda i: (i.created, i.version))

    def latest_version(self) -> str | None:
        """The newest version whose manifest reads (its data files are checked when opened)."""
        readable = [info for info in self.list_versions() if info.readable]
        return readable[-1].version if readable else None

    def open_version(self, version: str | None = None, *, verify: str = "auto") -> IndexVersion:
        """Open `version` (default: the latest). Raises VersionNotFound or IndexCorruptError."""
        if version is None:
            version = self.latest_version()
            if version is None:
                raise VersionNotFound(None, self.root, [])
        path = self.root / version
        if version.startswith(".") or "/" in version or not path.is_dir():
            raise VersionNotFound(version, self.root, [i.version for i in self.list_versions()])
        return IndexVersion(path, verify=verify)

    def verify(self, version: str | None = None) -> list[IndexCorruptError]:
        """Full check of every file of `version`: the list of problems (empty when sound)."""
        try:
            opened = self.open_version(version, verify="lazy")
        except IndexCorruptError as exc:
            return [exc]
        return opened.problems()

    def disk_bytes(self, version: str) -> int:
        """The version's size as if alone (files it shares with other versions included)."""
        return _dir_bytes(self.root / version)

    def total_disk_bytes(self) -> int:
        """What all published versions take on disk together, shared files counted once."""
        return unique_bytes(self._version_dirs())

    # ----------------------------------------------------------- publishing
    def staging(self, key: str, spec: dict) -> Staging:
        return Staging(self.root / STAGING / key, spec)

    def staging_parts(self, key: str) -> list[Path]:
        """The staging directories other ranks of a distributed build wrote for `key` (index/shards.py)."""
        return sorted((self.root / STAGING).glob(f"{key}.rank*"))

    def new_version_name(self, model_version: str) -> str:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        name, n = f"{model_version}-{stamp}", 1
        while (self.root / name).exists():
            n += 1
            name = f"{model_version}-{stamp}-{n}"
        return name

    def publish(self, staging: Staging, manifest: dict, records: dict[str, dict]) -> IndexVersion:
        """Turn a finished staging directory into a published version (atomically).

        Publishing never prunes: which versions may go depends on which one is served, which only
        the caller knows (`prune` after a successful activation, with the served ones protected).

        `manifest` carries everything but the per-date part, which comes from `records` (date ->
        record as written by Staging.write_date), in date order."""
        staging.commit()
        dates = sorted(records)
        manifest = {
            "format": FORMAT,
            **manifest,
            "dates": dates,
            "counts": [records[d]["count"] for d in dates],
            "kinds": [records[d]["kind"] for d in dates],
            # each date's input digest (index.build.window_digest): what lets a later build reuse it
            "windows": [records[d].get("window") for d in dates],
            "files": {rel: meta for d in dates for rel, meta in records[d]["files"].items()},
        }
        version = manifest["version"]
        target = self.root / version
        if target.exists():
            raise IndexStoreError(f"version {version} already exists at {target}")
        keep_files = set(manifest["files"])
        for sub in SUBDIRS:  # files of dates outside this build
            for file in (staging.path / sub).iterdir():
                if f"{sub}/{file.name}" not in keep_files:
                    file.unlink()
        raw = json.dumps(manifest, indent=1).encode()
        write_file(staging.path / MANIFEST, raw)
        write_file(staging.path / MANIFEST_SUM, f"{hashlib.sha256(raw).hexdigest()}  {MANIFEST}\n".encode())
        for name in ("build.json", "progress.jsonl", LOCK):
            (staging.path / name).unlink(missing_ok=True)
        for sub in (*SUBDIRS, "."):
            fsync_dir(staging.path / sub)
        staging.path.rename(target)
        staging.close()
        fsync_dir(self.root)
        fsync_dir(self.root / STAGING)
        return IndexVersion(target, verify="lazy")

    def prune(self, keep: int | None = None, *, protect: Iterable[str] = ()) -> list[str]:
        """Delete all but the newest `keep` versions, never those in `protect`; return the deleted names.

        `protect` must hold every version a service may still be reading (the active one and the
        one it replaced): the store cannot know which those are, the caller reads them from SQL."""
        keep = self.keep if keep is None else keep
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        protected = set(protect)
        versions = [info.version for info in self.list_versions()]
        doomed = [v for v in versions[: max(0, len(versions) - keep)] if v not in protected]
        for version in doomed:
            trash = self.root / f"{TRASH}{version}"
            shutil.rmtree(trash, ignore_errors=True)
            (self.root / version).rename(trash)  # vanishes from listings in one step
            shutil.rmtree(trash, ignore_errors=True)
        if doomed:
            fsync_dir(self.root)
        return doomed

    def remove_leftovers(self, older_than_seconds: float) -> list[str]:
        """Delete what interrupted jobs left behind: staging directories no build holds (their lock
        is free) and `.trash-*` directories, when untouched for `older_than_seconds`. Returns their
        paths relative to the root.

        A staging directory is what a rerun of the same build resumes from, so it is kept while a
        build holds it and for the given age after its last write."""
        removed = []
        now = dt.datetime.now().timestamp()

        def old(path: Path) -> bool:
            try:
                newest = max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))])
            except FileNotFoundError:  # being removed by someone else right now
                return False
            return now - newest >= older_than_seconds

        staging_root = self.root / STAGING
        for path in sorted(staging_root.iterdir()) if staging_root.is_dir() else []:
            if not path.is_dir() or not old(path):
                continue
            with open(path / LOCK, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a live build holds it
                    continue
                trash = self.root / f"{TRASH}{STAGING}-{path.name}"
                shutil.rmtree(trash, ignore_errors=True)
                path.rename(trash)  # a build starting now makes a fresh directory
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(f"{STAGING}/{path.name}")
        for path in sorted(self.root.glob(f"{TRASH}*")) if self.root.is_dir() else []:
            if path.is_dir() and old(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        if removed:
            fsync_dir(self.root)
        return removed


def list_versions(root: str | Path) -> list[VersionInfo]:
    return IndexStore(root).list_versions()


def latest_version(root: str | Path) -> str | None:
    return IndexStore(root).latest_version()


def open_version(root: str | Path, version: str | None = None, *, verify: str = "auto"):
    return IndexStore(root).open_version(version, verify=verify)
