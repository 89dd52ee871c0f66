"""Commit markers, and two caches that let a reader open a store with a handful of requests.

Markers are the truth. ``_commits/run=<run>/iteration=<n>.json`` is version 0, written create-only by the
first commit of the iteration; an overwrite writes the next version, ``iteration=<n>.v<k>.json``, also
create-only, and the highest version present is the commit. A marker is never modified, so whatever is
derived from it stays valid for as long as it is the latest version.

Caches, written by the committing writer after its marker, and never needed for correctness:

- **snapshot** ``_commits/run=<run>/_snapshot.block=<b>.json``: marker path -> marker content, for the
  iterations ``[b * BLOCK, (b + 1) * BLOCK)``. A reader uses an entry only when its marker is the latest
  one in the listing, and reads the markers the snapshot lacks. A lost or stale snapshot costs requests,
  never a wrong answer.
- **footers** ``<table>/_footers.run=<run>.block=<b>``: a Parquet ``_metadata`` file holding the footers of
  that block's data files. Data files are immutable (fresh names), so a footer never goes stale; readers
  use the cached footers of committed files and read the others from the files.

Why: on S3 every request costs milliseconds of server time. Opening 100 iterations took 100 marker GETs,
and a query 100 footer GETs on top of its 100 data reads (bench/store.py).
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.objects import list_files, read_many, write_atomic
from storage.schemas import TABLES

BLOCK = 256  # iterations per snapshot / footer-cache object: bounds what one commit rewrites
_MARKER_RE = re.compile(r"run=([^/]+)/iteration=(\d+)(?:\.v(\d+))?\.json$")
_SNAPSHOT_RE = re.compile(r"run=([^/]+)/_snapshot\.block=(\d+)\.json$")


@dataclass(frozen=True)
class Commit:
    """One committed iteration, as its latest marker describes it."""

    run: str
    iteration: int
    files: dict[str, list[str]]  # table -> data files, relative to the store root
    committed_at: datetime | None
    sizes: dict[str, int] = field(default_factory=dict)  # data file -> bytes (lets readers skip a HEAD)
    marker: str = ""  # the marker, relative to the store root
    version: int = 0


@dataclass(frozen=True)
class Markers:
    """One listing of ``_commits``: the latest marker of every iteration, and the snapshots present."""

    latest: dict[tuple[str, int], tuple[int, str]]  # (run, iteration) -> (version, path)
    snapshots: dict[tuple[str, int], str]  # (run, block) -> path


def marker_path(root: str, run: str, iteration: int, version: int) -> str:
    suffix = "" if version == 0 else f".v{version}"
    return f"{root}/_commits/run={run}/iteration={iteration}{suffix}.json"


def snapshot_path(root: str, run: str, iteration: int) -> str:
    return f"{root}/_commits/run={run}/_snapshot.block={iteration // BLOCK}.json"


def footers_path(root: str, table: str, run: str, iteration: int) -> str:
    return f"{root}/{table}/_footers.run={run}.block={iteration // BLOCK}"


def list_markers(afs: pafs.FileSystem, root: str, run: str | None = None) -> Markers:
    """One (paginated) listing; no object is read."""
    latest: dict[tuple[str, int], tuple[int, str]] = {}
    snapshots: dict[tuple[str, int], str] = {}
    directory = f"{root}/_commits" + (f"/run={run}" if run else "")
    for p in list_files(afs, directory, ".json", recursive=True):
        if m := _MARKER_RE.search(p):
            key, version = (m.group(1), int(m.group(2))), int(m.group(3) or 0)
            if run in (None, key[0]) and version >= latest.get(key, (-1, ""))[0]:
                latest[key] = (version, p)
        elif s := _SNAPSHOT_RE.search(p):
            snapshots[(s.group(1), int(s.group(2)))] = p
    return Markers(latest, snapshots)


def load_commits(afs: pafs.FileSystem, root: str, markers: Markers,
                 keys: list[tuple[str, int]] | None = None) -> list[Commit]:
    """The commits of ``keys`` (default: all listed), sorted, from the snapshots where they are current."""
    keys = sorted(markers.latest if keys is None else keys)
    blocks = {(r, it // BLOCK) for r, it in keys}
    entries: dict[str, Any] = {}
    for raw in read_many(afs, [markers.snapshots[b] for b in sorted(blocks) if b in markers.snapshots]).values():
        try:
            entries.update(json.loads(raw)["commits"])
        except (ValueError, KeyError, TypeError):
            pass  # a damaged snapshot is only a missed shortcut
    rel = len(root) + 1
    missing = [markers.latest[k][1] for k in keys if markers.latest[k][1][rel:] not in entries]
    for path, raw in read_many(afs, missing).items():
        try:
            entries[path[rel:]] = json.loads(raw)
        except ValueError:
            entries[path[rel:]] = {}  # the marker's existence is the commit; its content is a description
    out = []
    for run, iteration in keys:
        version, path = markers.latest[(run, iteration)]
        out.append(parse_marker(afs, root, run, iteration, version, path[rel:], entries[path[rel:]]))
    return out


def parse_marker(afs: pafs.FileSystem, root: str, run: str, iteration: int, version: int, marker: str,
                 info: Any) -> Commit:
    info = info if isinstance(info, dict) else {}
    files = info.get("files")
    if not isinstance(files, dict):
        # A marker of the first store version (no file list): the iteration's files are what its
        # partition directories hold.
        files = _listed_files(afs, root, run, iteration)
    try:
        committed_at = datetime.fromisoformat(info["committed_at"])
    except (KeyError, TypeError, ValueError):
        committed_at = None
    sizes = info.get("sizes") if isinstance(info.get("sizes"), dict) else {}
    return Commit(run, iteration, files, committed_at, sizes, marker, version)


def _listed_files(afs: pafs.FileSystem, root: str, run: str, iteration: int) -> dict[str, list[str]]:
    files = {}
    for table in TABLES:
        found = list_files(afs, f"{root}/{table}/run={run}/iteration={iteration}", ".parquet")
        if found:
            files[table] = [p[len(root) + 1:] for p in found]
    return files


def update_snapshot(fs: fsspec.AbstractFileSystem, afs: pafs.FileSystem, root: str, commit_info: dict,
                    marker: str) -> None:
    """Add a just-written marker's content to its block's snapshot (and drop older versions of it)."""
    run, iteration = commit_info["run"], commit_info["iteration"]
    path = snapshot_path(root, run, iteration)
    try:
        commits = json.loads(read_many(afs, [path])[path])["commits"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        commits = {}
    same = f"run={run}/iteration={iteration}"
    commits = {k: v for k, v in commits.items()
               if not ((m := _MARKER_RE.search(k)) and f"run={m.group(1)}/iteration={m.group(2)}" == same)}
    commits[marker] = commit_info
    write_atomic(fs, path, json.dumps({"format": 1, "commits": commits}, separators=(",", ":")).encode())


# ---- footers ---------------------------------------------------------------------------------------
def encode_footer(metadata: pq.FileMetaData) -> str:
    """A data file's footer as text for a staging pointer (a metadata-only Parquet file, base64)."""
    buf = io.BytesIO()
    metadata.write_metadata_file(buf)
    return base64.b64encode(buf.getvalue()).decode()


def decode_footer(text: str) -> pq.FileMetaData:
    return pq.read_metadata(pa.BufferReader(base64.b64decode(text)))


def update_footers(fs: fsspec.AbstractFileSystem, afs: pafs.FileSystem, root: str, table: str, run: str,
                   iteration: int, footers: dict[str, pq.FileMetaData]) -> None:
    """Append the footers of a commit's data files (rel path -> footer) to the block's footer cache."""
    path = footers_path(root, table, run, iteration)
    try:
        cached = pq.read_metadata(path, filesystem=afs)
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        cached = None
    present = set()
    if cached is not None:
        present = {cached.row_group(i).column(0).file_path for i in range(cached.num_row_groups)}
    for rel, metadata in footers.items():
        in_table = rel[len(table) + 1:]  # paths relative to <root>/<table>/, as _metadata files want
        if in_table in present:
            continue  # a retried commit: each file once, or readers would see its row groups twice
        metadata.set_file_path(in_table)
        if cached is not None and cached.schema.equals(metadata.schema):
            cached.append_row_groups(metadata)
        else:
            cached = metadata  # first file, or the table's schema changed: start over (others fall back)
        present.add(in_table)
    if cached is not None:
        buf = io.BytesIO()
        cached.write_metadata_file(buf)
        write_atomic(fs, path, buf.getvalue())


def cached_fragments(afs: pafs.FileSystem, root: str, table: str, commits: list[Commit],
                     partitioning: ds.Partitioning) -> dict[str, ds.ParquetFileFragment]:
    """Fragments that carry their footer already (no footer read when scanned), by absolute path."""
    wanted = {f"{root}/{rel}" for c in commits for rel in c.files.get(table, [])}
    caches = sorted({footers_path(root, table, c.run, c.iteration) for c in commits if c.files.get(table)})
    out = {}
    for path in caches:
        try:
            dataset = ds.parquet_dataset(path, filesystem=afs, partitioning=partitioning)
        except (FileNotFoundError, OSError, pa.ArrowInvalid):
            continue
        for fragment in dataset.get_fragments():
            if fragment.path in wanted:
                out[fragment.path] = fragment
    return out
