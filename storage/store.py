"""The rollout store: Parquet tables, hive-partitioned by run and iteration, committed atomically.

Layout under the root URL (a local directory or any fsspec URL such as ``s3://bucket/prefix``)::

    <root>/<table>/run=<run>/iteration=<n>/part-<id>.parquet   data, written by stage() under a fresh name
    <root>/_staging/run=<run>/iteration=<n>/<table>.json        which part file is staged for each table
    <root>/_commits/run=<run>/iteration=<n>[.v<k>].json         commit marker: the list of committed files
    <root>/_locks/run=<run>.json                                writer lock (storage/lock.py)
    <root>/_commits/run=<run>/_snapshot.block=<b>.json          caches for readers (storage/manifest.py)
    <root>/<table>/_footers.run=<run>.block=<b>

Why this gives atomic iterations on S3 too, where a set of objects can't be published at once: a data file
is visible only through the commit marker that lists it, and the marker is one object, written last and
create-only. Before it exists nothing of the iteration is visible; once it exists every file it lists is
in place. Files nobody lists (an interrupted attempt, a re-staged table, data replaced by an overwrite)
are invisible and deleted by the next commit or ``discard_staged``. Commits copy nothing: staged files
are already at their final names.

Readers (``read``, ``connect``) take the file lists (and sizes) from the markers, so they never list or
glob data directories and never see a torn or uncommitted file; per-run caches spare them most requests
(storage/manifest.py). They read through one pyarrow dataset per table, which DuckDB scans with projection
and filter pushdown (storage/objects.py says why not DuckDB's own reader). One writer per run at a time:
``Store.lock``. Any number of readers in other processes may read at any time; a reader that opened before
an overwrite of an iteration may fail on that iteration's deleted files and has to reconnect.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import cached_property
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.lock import RunLock
from storage.manifest import (
    Commit, cached_fragments, decode_footer, encode_footer, list_markers, load_commits, marker_path,
    update_footers, update_snapshot,
)
from storage.objects import (
    arrow_filesystem, create_only, filesystem, invalidate, is_local, list_files, read_bytes, read_many, remove,
    resolve_options, write_atomic,
)
from storage.retry import retrying
from storage.schemas import PARTITION_FIELDS, REQUIRED, SCHEMA_VERSION_FIELD, SCHEMA_VERSIONS, TABLES

_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # safe as a path segment and a hive value
MARKER_FORMAT = 2  # 1: marker without a file list (files found by listing the partition dirs)
_HIVE = ds.partitioning(pa.schema(list(PARTITION_FIELDS)), flavor="hive")

# Parquet layout, measured by bench/store.py. One row group per iteration file (10k rollouts ~ 30 MB).
# The scalar columns that queries group and filter on sit together, so a reader fetches them in one
# coalesced range instead of one request per column. They come last, after the bulky columns (text,
# tokens) and next to the footer: SeaweedFS answers a range read in the first 8 MiB of an object about
# 3.5x slower than one further in (6.5 ms against 1.8 ms for 4 KB on loopback; it appears to fetch whole
# 4 MiB chunks there): with the scalars first the 100-file GROUP BY took 0.99 s on S3, with them last
# 0.63 s (local 0.32 s either way). Other object stores and local files don't care where they are.
# Bulky columns skip dictionary encoding (it cost 35% of the encode time and saved 2% of the bytes) and
# statistics (min/max of token ids prune nothing); float logprobs are byte-stream-split, 9% smaller.
_ROW_GROUP_ROWS = 1 << 20
_BULKY = ("prompt", "completion", "program", "prompt_ids", "completion_ids", "old_logprobs", "fgo_mask",
          "executed_lines")
_BYTE_STREAM_SPLIT = ("old_logprobs",)


def _retried(method):
    """An object store's operation, retried across an outage (storage/retry.py); local stores call it once."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.local:
            return method(self, *args, **kwargs)
        return retrying(lambda: method(self, *args, **kwargs), method.__name__, self.endpoint, self.retry_s)
    return wrapper


class IterationAlreadyCommitted(RuntimeError):
    """commit() found a marker for (run, iteration); pass overwrite=True to replace it."""


class Store:
    """A rollout store rooted at ``url``.

    ``storage_options`` go to fsspec (e.g. ``{"endpoint_url": ..., "key": ..., "secret": ...}`` for s3fs);
    for ``s3://`` URLs anything not given comes from the standard AWS environment variables, the endpoint
    from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``.
    """

    def __init__(self, url: str | os.PathLike, storage_options: dict[str, Any] | None = None,
                 retry_s: float | None = None):
        self.url = str(url)
        self.storage_options = dict(storage_options or {})
        # An object store's operations are retried across an outage for this long (storage/retry.py); the
        # option may also come in storage_options (the run config's store_options), as `retry_s`.
        option = self.storage_options.pop("retry_s", None)
        self.retry_s = float(retry_s if retry_s is not None else option if option is not None else 60.0)
        self.fs, self.root = filesystem(self.url, self.storage_options)
        self.local = is_local(self.fs)
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)

    @cached_property
    def endpoint(self) -> str:
        """Where the store's server is, for messages (the URL itself for a local store)."""
        if self.local:
            return self.url
        opts = resolve_options(self.url, self.storage_options)
        return opts.get("endpoint_url") or opts.get("client_kwargs", {}).get("endpoint_url") or self.url

    @cached_property
    def arrow_fs(self) -> pafs.FileSystem:
        """The pyarrow filesystem that reads and writes the Parquet files (same endpoint and credentials)."""
        return arrow_filesystem(self.fs, self.url, self.storage_options)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ---- paths -------------------------------------------------------------------------------------
    def _partition_dir(self, table: str, run: str, iteration: int) -> str:
        return f"{self.root}/{table}/run={run}/iteration={iteration}"

    def _staging_dir(self, run: str, iteration: int) -> str:
        return f"{self.root}/_staging/run={run}/iteration={iteration}"

    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _rel(self, path: str) -> str:
        return path[len(self.root) + 1:]

    def _uri(self, path: str) -> str:
        """A path as messages show it: plain for local files, with the protocol otherwise."""
        return path if self.local else self.fs.unstrip_protocol(path)

    # ---- writing -----------------------------------------------------------------------------------
    @_retried
    def stage(self, run: str, iteration: int, table: str, data: pa.Table | list[dict]) -> None:
        """Validate ``data`` against ``table``'s schema and write it, invisible to readers until ``commit``.

        Staging the same table again replaces it (the earlier file becomes a leftover that commit deletes).
        """
        _check_key(run, iteration)
        arrow = conform(table, data)
        path = f"{self._partition_dir(table, run, iteration)}/part-{uuid.uuid4().hex[:16]}.parquet"
        size, footer = self._write_parquet(arrow, path)
        # The pointer is written after the data, so a pointer always names a complete file. It carries
        # the file's footer, which commit adds to the readers' footer cache without reading the file.
        pointer = {"table": table, "file": self._rel(path), "rows": arrow.num_rows, "bytes": size,
                   "staged_at": datetime.now(timezone.utc).isoformat(), "footer": encode_footer(footer)}
        write_atomic(self.fs, f"{self._staging_dir(run, iteration)}/{table}.json", json.dumps(pointer).encode())

    @_retried
    def read_staged(self, run: str, iteration: int, table: str, columns: list[str] | None = None) -> pa.Table:
        """The staged (uncommitted) rows of one table, as written by ``stage``."""
        _check_key(run, iteration)
        _schema(table)
        raw = read_bytes(self.fs, f"{self._staging_dir(run, iteration)}/{table}.json")
        if raw is None:
            raise FileNotFoundError(f"nothing staged for table {table!r} of run={run!r} iteration={iteration}")
        return self._read_file(self._abs(json.loads(raw)["file"]), columns)

    def _write_parquet(self, table: pa.Table, path: str) -> tuple[int, pq.FileMetaData]:
        """Write ``table`` to ``path`` atomically; returns the file's size in bytes and its footer."""
        footer: list[pq.FileMetaData] = []
        if self.local:
            write_atomic(self.fs, path, lambda f: _write_parquet(table, f, footer))
            return os.path.getsize(path), footer[0]
        # One object, visible only once the (multipart) upload completes; parts upload while encoding goes on.
        with self.arrow_fs.open_output_stream(path) as out:
            _write_parquet(table, out, footer)
            size = out.tell()
        return size, footer[0]

    def _staged(self, run: str, iteration: int) -> dict[str, dict]:
        """table -> staging pointer of every staged table of (run, iteration)."""
        paths = list_files(self.arrow_fs, self._staging_dir(run, iteration), ".json")
        blobs = read_many(self.arrow_fs, paths)
        out = {}
        for p in paths:
            pointer = json.loads(blobs[p])
            if pointer.get("table") in TABLES:
                out[pointer["table"]] = pointer
        return out

    @_retried
    def discard_staged(self, run: str, iteration: int) -> None:
        """Drop everything staged for (run, iteration), and any uncommitted leftovers of earlier attempts.

        Call it when an iteration starts, so a re-run never commits a table staged by a crashed attempt.
        """
        _check_key(run, iteration)
        invalidate(self.fs)
        old = self._read_commit(run, iteration)
        self._cleanup(run, iteration, keep=_file_set(old) if old else set())

    @_retried
    def commit(self, run: str, iteration: int, overwrite: bool = False, lock: RunLock | None = None) -> None:
        """Make the staged tables of (run, iteration) visible, all at once.

        Committing an iteration twice raises ``IterationAlreadyCommitted`` unless ``overwrite=True``; an
        overwrite replaces the whole iteration (tables not staged again disappear from it). Retrying a
        commit that already wrote its marker, with nothing re-staged, is a no-op. With ``lock``, the lock
        is checked to still be held right before the marker is written.
        """
        _check_key(run, iteration)
        invalidate(self.fs)
        staged = self._staged(run, iteration)
        if not staged:
            raise ValueError(f"nothing staged for run={run!r} iteration={iteration}; call stage() first")
        files = {name: [p["file"]] for name, p in sorted(staged.items())}
        old = self._read_commit(run, iteration)
        if old is not None and old.files == files:
            # An earlier attempt of this very commit got past its marker: finish its work.
            raw = read_bytes(self.fs, self._abs(old.marker))
            self._publish(run, iteration, old.marker, json.loads(raw) if raw else {}, staged)
            self._cleanup(run, iteration, keep=_file_set(old))
            return
        if old is not None and not overwrite:
            raise IterationAlreadyCommitted(
                f"run={run!r} iteration={iteration} is already committed ({self._uri(self._abs(old.marker))}); "
                "call commit(..., overwrite=True) to replace it"
            )
        if lock is not None:
            if lock.run != run:
                raise ValueError(f"the lock is for run {lock.run!r}, not {run!r}")
            lock.ensure_held()

        info = {
            "format": MARKER_FORMAT,
            "run": run,
            "iteration": iteration,
            "files": files,
            "rows": {name: p["rows"] for name, p in sorted(staged.items())},
            "sizes": {p["file"]: p["bytes"] for p in staged.values() if p.get("bytes") is not None},
            "schema_versions": {name: SCHEMA_VERSIONS[name] for name in sorted(staged)},
            "committed_at": datetime.now(timezone.utc).isoformat(),
        }
        # Markers are never modified: an overwrite creates the next version, create-only like the first,
        # so two writers racing for the same iteration can't both win, and readers see one whole version.
        marker = marker_path(self.root, run, iteration, 0 if old is None else old.version + 1)
        if not create_only(self.fs, marker, json.dumps(info, indent=1).encode()):
            raise IterationAlreadyCommitted(
                f"run={run!r} iteration={iteration} was committed concurrently ({self._uri(marker)})"
            )
        self._publish(run, iteration, self._rel(marker), info, staged)
        self._cleanup(run, iteration, keep=_file_set(files))

    def _publish(self, run: str, iteration: int, marker: str, info: dict, staged: dict[str, dict]) -> None:
        """Update the readers' caches after a marker: the run's snapshot and each table's footer cache."""
        def footers(name: str) -> None:
            p = staged[name]
            if p.get("footer"):
                update_footers(self.fs, self.arrow_fs, self.root, name, run, iteration,
                               {p["file"]: decode_footer(p["footer"])})

        with ThreadPoolExecutor(len(staged) + 1) as pool:  # independent objects: update them at once
            jobs = [pool.submit(update_snapshot, self.fs, self.arrow_fs, self.root, info, marker)]
            jobs += [pool.submit(footers, name) for name in staged]
            for job in jobs:
                job.result()

    def _cleanup(self, run: str, iteration: int, keep: set[str]) -> None:
        """Delete the staging pointers and every data file of (run, iteration) not in ``keep``."""
        garbage = []
        for name in TABLES:
            for path in list_files(self.arrow_fs, self._partition_dir(name, run, iteration), ".parquet"):
                if self._rel(path) not in keep:
                    garbage.append(path)
        garbage += list_files(self.arrow_fs, self._staging_dir(run, iteration))
        remove(self.fs, garbage)
        if self.local:
            shutil.rmtree(self._staging_dir(run, iteration), ignore_errors=True)

    # ---- locking -----------------------------------------------------------------------------------
    def lock(self, run: str, owner: str | None = None, ttl_s: float = 300.0, wait_s: float = 0.0,
             heartbeat: bool = True, holder_gone: Callable[[dict[str, Any]], str | None] | None = None
             ) -> RunLock:
        """The writer lock of ``run``: ``with store.lock(run, owner="flow-run-id"):`` ... stage, commit.

        Raises ``StoreLocked`` naming the holder if another live writer holds it (after waiting up to
        ``wait_s``). A holder that stops refreshing (crashed) loses it ``ttl_s`` after its last heartbeat; one
        that is provably gone (a dead process on this machine, or ``holder_gone(holder)`` says why) at once.
        """
        _check_key(run, 0)
        path = f"{self.root}/_locks/run={run}.json"
        return RunLock(self.fs, path, self._uri(path), run, owner, ttl_s, wait_s, heartbeat,
                       holder_gone=holder_gone)

    # ---- reading -----------------------------------------------------------------------------------
    def _commits(self, run: str | None = None, iteration: int | None = None) -> list[Commit]:
        """Every commit (optionally of one run / iteration), with its file lists, in (run, iteration) order."""
        markers = list_markers(self.arrow_fs, self.root, run)
        keys = [k for k in markers.latest if iteration is None or k[1] == iteration]
        return load_commits(self.arrow_fs, self.root, markers, keys)

    def _read_commit(self, run: str, iteration: int) -> Commit | None:
        found = self._commits(run, iteration)
        return found[0] if found else None

    @_retried
    def committed_iterations(self, run: str) -> list[int]:
        _check_key(run, 0)
        return sorted(it for _, it in list_markers(self.arrow_fs, self.root, run).latest)

    def latest_iteration(self, run: str) -> int | None:
        its = self.committed_iterations(run)
        return its[-1] if its else None

    @_retried
    def runs(self) -> list[str]:
        """Runs with at least one committed iteration."""
        return sorted({r for r, _ in list_markers(self.arrow_fs, self.root).latest})

    @_retried
    def read(self, table: str, run: str | None = None, iteration: int | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Committed rows of ``table`` (optionally one run / iteration), with ``run`` and ``iteration``.

        Columns follow the current schema: columns missing from older files read as NULL, and columns
        unknown to this version are dropped. ``columns`` selects a subset (partition columns always come).
        """
        schema = _schema(table)
        if run is not None:
            _check_key(run, 0)
        if columns is not None:
            unknown = sorted(set(columns) - set(schema.names))
            if unknown:
                raise ValueError(f"{table}: unknown column(s) {unknown}; valid: {schema.names}")
            columns = list(columns) + [f.name for f in PARTITION_FIELDS]
        return self._dataset(table, self._commits(run, iteration)).to_table(columns=columns)

    def _read_file(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """One data file, columns in the order asked for (default: the schema's); one footer read."""
        with self.arrow_fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f, pre_buffer=True)  # pre_buffer: coalesced, concurrent range reads
            present = set(pf.schema_arrow.names)
            wanted = columns if columns is not None else TABLES[_table_of(path)].names
            order = [c for c in wanted if c in present]
            return pf.read(columns=order).select(order)

    def _dataset(self, table: str, commits: list[Commit]) -> ds.FileSystemDataset:
        """A pyarrow dataset over the committed files of ``table``, in commit order, with the full schema.

        Built from the markers and the footer cache: no listing, no HEAD, and no footer read for a file whose
        footer is cached. Columns a file lacks read as NULL; the partition columns come from each fragment's
        partition expression.
        """
        fmt = ds.ParquetFileFormat()
        cached = cached_fragments(self.arrow_fs, self.root, table, commits, _HIVE)
        fragments = []
        for c in commits:
            where = (ds.field("run") == pa.scalar(c.run, pa.string())) & (
                ds.field("iteration") == pa.scalar(c.iteration, pa.int32()))
            for rel in c.files.get(table, []):
                path = self._abs(rel)
                fragments.append(cached.get(path) or fmt.make_fragment(path, self.arrow_fs, where,
                                                                       file_size=c.sizes.get(rel)))
        dataset = _StoreDataset(fragments, _with_partitions(_schema(table)), fmt, self.arrow_fs)
        dataset.footers = list(cached.values())[-_SIZE_SAMPLE:]
        return dataset

    @_retried
    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with a ``commits`` view and one view per table.

        A snapshot: the views read the files committed when the connection was made; iterations committed
        later need a new connection.
        """
        con = duckdb.connect(":memory:")
        commits = self._commits()
        con.register("_commits_snapshot", _commits_table(commits))
        con.execute("CREATE VIEW commits AS SELECT run, iteration, committed_at FROM _commits_snapshot")
        for name in TABLES:
            # DuckDB scans the dataset through Arrow and pushes column selection and filters into it.
            con.register(f"_dataset_{name}", self._dataset(name, commits))
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _dataset_{name}")
        return con


# How many files a scan reads at once. pyarrow's default (4) leaves an object store idle between
# requests: a GROUP BY over 100 files reads ~70 KB per file (plus the HEAD pyarrow sends on opening
# it), so its time is request latency; with 64 files in flight it took 0.55 s on SeaweedFS instead of
# 0.81 s, and no longer locally (bench/store.py). The bound is on bytes, not files: a scan of the bulky
# columns (tens of MB per file) keeps pyarrow's default, so its memory stays what it was.
_READAHEAD_BYTES = 64 << 20  # compressed bytes of the scanned columns in flight
_MIN_READAHEAD, _MAX_READAHEAD = 4, 64
_SIZE_SAMPLE = 16  # files whose footers estimate the bytes per file (a table's files are alike)


class _StoreDataset(ds.FileSystemDataset):
    """A FileSystemDataset whose scanners read as many files at once as the scanned columns allow.

    DuckDB scans a registered dataset through ``dataset.scanner(columns=..., filter=...)`` and has no
    way to pass scan options, so they are defaulted here.
    """

    footers: list[ds.ParquetFileFragment] = []  # fragments whose footer is in memory (the cached ones)

    def scanner(self, *args, **kwargs):
        if "fragment_readahead" not in kwargs:
            kwargs["fragment_readahead"] = self.fragment_readahead(kwargs.get("columns"))
        return super().scanner(*args, **kwargs)

    def fragment_readahead(self, columns: list[str] | None = None) -> int:
        """Files to read at once when scanning ``columns`` (default all): ~_READAHEAD_BYTES in flight."""
        if not hasattr(self, "_column_bytes"):
            self._column_bytes = _column_bytes(self.footers)
        names = columns if isinstance(columns, list) else self.schema.names
        per_file = sum(self._column_bytes.get(n, 0.0) for n in names)
        if not per_file:  # no footer in memory: no estimate, pyarrow's default
            return _MIN_READAHEAD
        return int(min(_MAX_READAHEAD, max(_MIN_READAHEAD, _READAHEAD_BYTES // per_file)))


def _column_bytes(fragments) -> dict[str, float]:
    """Mean compressed bytes per file of each top-level column, from footers already in memory."""
    total: dict[str, float] = {}
    n = 0
    for fragment in fragments:
        metadata = fragment.metadata  # cached fragments carry their footer: no I/O
        for i in range(metadata.num_row_groups):
            rg = metadata.row_group(i)
            for j in range(rg.num_columns):
                col = rg.column(j)
                name = col.path_in_schema.split(".", 1)[0]
                total[name] = total.get(name, 0.0) + col.total_compressed_size
        n += 1
    return {k: v / n for k, v in total.items()} if n else {}


def _commits_table(commits: list[Commit]) -> pa.Table:
    return pa.table({
        "run": pa.array([c.run for c in commits], pa.string()),
        "iteration": pa.array([c.iteration for c in commits], pa.int32()),
        "committed_at": pa.array([c.committed_at for c in commits], pa.timestamp("us", tz="UTC")),
    })


def _file_set(files: Commit | dict[str, list[str]]) -> set[str]:
    """Every data file a commit (or a file list) names."""
    files = files.files if isinstance(files, Commit) else files
    return {f for fs in files.values() for f in fs}


def _write_parquet(table: pa.Table, f, footer: list | None = None) -> None:
    names = set(table.column_names)
    table = table.select([n for n in _BULKY if n in names] + [n for n in table.column_names if n not in _BULKY])
    small = [n for n in table.column_names if n not in _BULKY]
    # A list column's values live in the leaf "<name>.list.element"; the option applies to leaves.
    split = [f"{n}.list.element" for n in _BYTE_STREAM_SPLIT if n in names]
    pq.write_table(
        table, f, compression="zstd", row_group_size=_ROW_GROUP_ROWS, use_dictionary=small,
        write_statistics=small, use_byte_stream_split=split or False, metadata_collector=footer,
    )


def open_store(url: str | os.PathLike, storage_options: dict[str, Any] | None = None,
               retry_s: float | None = None) -> Store:
    """``retry_s``: how long an object store's operations are retried across an outage (default 60 s)."""
    return Store(url, storage_options, retry_s)


def connect(
    store_url: str | os.PathLike, storage_options: dict[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """Read-only SQL access to the committed data of a store, from any process."""
    return open_store(store_url, storage_options).connect()


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, params: list | dict | None = None) -> pa.Table:
    """Run ``sql`` with bound ``params`` and return the result as an Arrow table."""
    rel = con.sql(sql, params=params)  # DuckDB 2.0: .arrow() is a reader, to_arrow_table() a Table
    return rel.to_arrow_table() if rel is not None else pa.table({})


# ---- validation ------------------------------------------------------------------------------------
def conform(table: str, data: pa.Table | list[dict]) -> pa.Table:
    """``data`` cast to ``table``'s schema, with missing optional columns as NULL and its schema_version set.

    Raises ValueError naming the table and the column for an unknown table, an unknown or missing
    required column, or a value that can't be cast.
    """
    schema = _schema(table)
    fields = {f.name: f for f in schema if f.name != SCHEMA_VERSION_FIELD.name}
    if isinstance(data, pa.Table):
        given = {n: data[n] for n in data.column_names if n != SCHEMA_VERSION_FIELD.name}
        n_rows = data.num_rows
    elif isinstance(data, list):
        if not data:
            return schema.empty_table()
        names = list(dict.fromkeys(k for row in data for k in row))
        given = {n: [row.get(n) for row in data] for n in names if n != SCHEMA_VERSION_FIELD.name}
        n_rows = len(data)
    else:
        raise TypeError(f"{table}: expected a pyarrow.Table or a list of dicts, got {type(data).__name__}")

    unknown = [n for n in given if n not in fields]
    if unknown:
        raise ValueError(
            f"{table}: unknown column(s) {unknown} (run/iteration come from the path); "
            f"valid: {sorted(fields)}"
        )
    for name in REQUIRED[table]:
        if name not in given:
            raise ValueError(f"{table}: missing required column {name!r}")

    cols = [pa.array([SCHEMA_VERSIONS[table]] * n_rows, pa.int32())]
    for name, field in fields.items():
        if name not in given:
            cols.append(pa.nulls(n_rows, field.type))
            continue
        try:
            if isinstance(given[name], list):
                col = pa.array(given[name], type=field.type)
            else:
                col = given[name].cast(field.type)  # safe cast: overflow and lossy casts raise
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError) as e:
            raise ValueError(f"{table}: column {name!r} can't be cast to {field.type}: {e}") from e
        if name in REQUIRED[table] and col.null_count:
            raise ValueError(f"{table}: required column {name!r} has {col.null_count} null value(s)")
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def _schema(table: str) -> pa.Schema:
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; valid tables: {sorted(TABLES)}") from None


def _with_partitions(schema: pa.Schema) -> pa.Schema:
    # Partition columns last, the order DuckDB's hive_partitioning gives.
    return pa.schema(list(schema) + list(PARTITION_FIELDS))


def _table_of(path: str) -> str:
    """The table a data file belongs to: the directory above run=<run>/iteration=<n>/<file>."""
    return path.rsplit("/", 4)[-4]


def _check_key(run: str, iteration: int) -> None:
    if not isinstance(run, str) or not _RUN_RE.match(run):
        raise ValueError(f"run must match {_RUN_RE.pattern} (it is a path segment), got {run!r}")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or not 0 <= iteration < 2**31:
        raise ValueError(f"iteration must be an int in [0, 2**31), got {iteration!r}")

