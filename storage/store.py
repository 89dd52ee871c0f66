"""The rollout store: Parquet tables, hive-partitioned by run and iteration, committed atomically.

Layout under the root URL (a local directory or any fsspec URL such as ``s3://bucket/prefix``)::

    <root>/_staging/run=<run>/iteration=<n>/<table>.parquet     written by stage(), invisible to readers
    <root>/<table>/run=<run>/iteration=<n>/part-0.parquet        published by commit()
    <root>/_commits/run=<run>/iteration=<n>.json                 commit marker, written last

Readers (``read``, ``connect``) only see partitions that have a commit marker. One writer per run is
assumed (the training flow); any number of readers in other processes may read at any time.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from storage.schemas import PARTITION_FIELDS, REQUIRED, SCHEMA_VERSION, SCHEMA_VERSION_FIELD, TABLES

_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # safe as a path segment and a hive value
_MARKER_RE = re.compile(r"run=([^/]+)/iteration=(\d+)\.json$")


class IterationAlreadyCommitted(RuntimeError):
    """commit() found a marker for (run, iteration); pass overwrite=True to replace it."""


class Store:
    """A rollout store rooted at ``url``; ``storage_options`` go to fsspec (e.g. s3fs credentials)."""

    def __init__(self, url: str | os.PathLike, storage_options: dict[str, Any] | None = None):
        self.url = str(url)
        self.fs, root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = root.rstrip("/")
        # Local files get temp-name + os.replace; object stores get direct puts (one object is atomic).
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ---- paths -------------------------------------------------------------------------------------
    def _staging_dir(self, run: str, iteration: int) -> str:
        return f"{self.root}/_staging/run={run}/iteration={iteration}"

    def _partition_dir(self, table: str, run: str, iteration: int) -> str:
        return f"{self.root}/{table}/run={run}/iteration={iteration}"

    def _marker(self, run: str, iteration: int) -> str:
        return f"{self.root}/_commits/run={run}/iteration={iteration}.json"

    def _uri(self, path: str) -> str:
        """A path as DuckDB should see it: plain for local files, with the protocol otherwise."""
        return path if self.local else self.fs.unstrip_protocol(path)

    # ---- writing -----------------------------------------------------------------------------------
    def stage(self, run: str, iteration: int, table: str, data: pa.Table | list[dict]) -> None:
        """Validate ``data`` against ``table``'s schema and write it to the staging area.

        Staging the same table again replaces it. Nothing is visible to readers until ``commit``.
        """
        _check_key(run, iteration)
        arrow = conform(table, data)
        path = f"{self._staging_dir(run, iteration)}/{table}.parquet"
        self._write_parquet(arrow, path)

    def read_staged(self, run: str, iteration: int, table: str) -> pa.Table:
        _check_key(run, iteration)
        _schema(table)
        with self.fs.open(f"{self._staging_dir(run, iteration)}/{table}.parquet", "rb") as f:
            return pq.read_table(f)

    def discard_staged(self, run: str, iteration: int) -> None:
        _check_key(run, iteration)
        d = self._staging_dir(run, iteration)
        if self.fs.exists(d):
            self.fs.rm(d, recursive=True)

    def commit(self, run: str, iteration: int, overwrite: bool = False) -> None:
        """Publish the staged tables of (run, iteration) and make them visible, all at once.

        Why this order gives atomic visibility: readers only look at partitions that have a marker, and
        the marker is written last, create-only. Before it exists nothing of this iteration is visible
        (published files without a marker are leftovers, ignored by readers and deleted on the next
        commit); once it exists every table file is already in place. Staging is kept until the marker
        is written, so a commit interrupted at any point can simply be retried.
        """
        _check_key(run, iteration)
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache()  # s3fs may cache listings; decisions below need fresh ones
        staging = self._staging_dir(run, iteration)
        found = set(self.fs.glob(f"{staging}/*.parquet"))
        staged = {n: f"{staging}/{n}.parquet" for n in TABLES if f"{staging}/{n}.parquet" in found}
        if not staged:
            raise ValueError(f"nothing staged for run={run!r} iteration={iteration}; call stage() first")

        marker = self._marker(run, iteration)
        if self.fs.exists(marker):
            if not overwrite:
                raise IterationAlreadyCommitted(
                    f"run={run!r} iteration={iteration} is already committed ({self._uri(marker)}); "
                    "call commit(..., overwrite=True) to replace it"
                )
            # Un-commit first, so readers never see a mix of old and new files while we replace them.
            self.fs.rm(marker)

        # Leftovers of an interrupted commit, or the old data when overwriting: never append to them.
        for name in TABLES:
            d = self._partition_dir(name, run, iteration)
            if self.fs.exists(d):
                self.fs.rm(d, recursive=True)

        rows = {}
        for name, src in staged.items():
            dst = f"{self._partition_dir(name, run, iteration)}/part-0.parquet"
            self._copy_atomic(src, dst)
            with self.fs.open(dst, "rb") as f:
                rows[name] = pq.ParquetFile(f).metadata.num_rows

        info = {
            "run": run,
            "iteration": iteration,
            "tables": sorted(rows),
            "rows": rows,
            "schema_version": SCHEMA_VERSION,
            "committed_at": datetime.now(timezone.utc).isoformat(),
        }
        self._create_marker(marker, json.dumps(info, indent=1).encode(), run, iteration)
        self.discard_staged(run, iteration)

    def _write_parquet(self, table: pa.Table, path: str) -> None:
        parent = path.rsplit("/", 1)[0]
        if not self.local:
            # A single object PUT is atomic on S3: readers see the old object or the new one.
            with self.fs.open(path, "wb") as f:
                pq.write_table(table, f, compression="zstd")
            return
        self.fs.makedirs(parent, exist_ok=True)
        # Temp name must not end in .parquet, or reader globs would pick up a half-written file.
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
            os.replace(tmp, path)  # atomic rename: never a torn file under the final name
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _copy_atomic(self, src: str, dst: str) -> None:
        if not self.local:
            self.fs.copy(src, dst)  # server-side copy, atomic per object
            return
        self.fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{dst}.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.copy(src, tmp)  # copy, not move: staging stays intact until the marker exists
            os.replace(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _create_marker(self, path: str, data: bytes, run: str, iteration: int) -> None:
        """Write ``data`` to ``path`` only if ``path`` does not exist yet (create-only, atomic)."""
        exists = IterationAlreadyCommitted(
            f"run={run!r} iteration={iteration} was committed concurrently ({self._uri(path)})"
        )
        if self.local:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            # Write a temp file, then hard-link it: link() is atomic and fails if the name exists, so
            # the marker is create-only and never seen half written ("xb" alone is only create-only).
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise exists from None
                except OSError:  # file systems without hard links
                    with open(path, "xb") as f:
                        f.write(data)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            return
        try:
            self.fs.pipe_file(path, data, mode="create")  # s3fs: PUT with If-None-Match: *
        except FileExistsError:
            raise exists from None
        except OSError:
            # SeaweedFS answers a failed conditional put with EINVAL instead of 412/FileExistsError.
            if self.fs.exists(path):
                raise exists from None
            raise

    # ---- reading -----------------------------------------------------------------------------------
    def _commits(self, run: str | None = None) -> list[tuple[str, int, str]]:
        """(run, iteration, marker path) of every commit marker, sorted."""
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache()  # listings may be cached (s3fs); commits must be seen at once
        pattern = f"{self.root}/_commits/run={run or '*'}/iteration=*.json"
        out = []
        for p in self.fs.glob(pattern):
            m = _MARKER_RE.search(p)
            if m:
                out.append((m.group(1), int(m.group(2)), p))
        return sorted(out)

    def _table_files(self, table: str, run: str | None = None) -> set[str]:
        """Published files of ``table``, committed or not (one listing, not one request per file)."""
        return set(self.fs.glob(f"{self.root}/{table}/run={run or '*'}/iteration=*/part-0.parquet"))

    def committed_iterations(self, run: str) -> list[int]:
        _check_key(run, 0)
        return [it for _, it, _ in self._commits(run)]

    def latest_iteration(self, run: str) -> int | None:
        its = self.committed_iterations(run)
        return its[-1] if its else None

    def runs(self) -> list[str]:
        """Runs with at least one committed iteration."""
        return sorted({r for r, _, _ in self._commits()})

    def read(self, table: str, run: str | None = None, iteration: int | None = None) -> pa.Table:
        """Committed rows of ``table`` (optionally one run / iteration), with ``run`` and ``iteration``.

        Columns follow the current schema: columns missing from older files read as NULL, and columns
        unknown to this version are dropped.
        """
        schema = _schema(table)
        if run is not None:
            _check_key(run, 0)
        out_schema = _with_partitions(schema)
        commits = self._commits(run)
        files = self._table_files(table, run)  # listed after the markers: committed files are all in it
        parts = []
        for r, it, _ in commits:
            path = f"{self._partition_dir(table, r, it)}/part-0.parquet"
            if (iteration is not None and it != iteration) or path not in files:
                continue  # not asked for, or this iteration committed other tables only
            with self.fs.open(path, "rb") as f:
                t = pq.read_table(f)
            cols = [
                t[fld.name].cast(fld.type) if fld.name in t.column_names else pa.nulls(len(t), fld.type)
                for fld in schema
            ]
            cols += [pa.array([r] * len(t), pa.string()), pa.array([it] * len(t), pa.int32())]
            parts.append(pa.Table.from_arrays(cols, schema=out_schema))
        return pa.concat_tables(parts) if parts else out_schema.empty_table()

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with a ``commits`` view and one view per table.

        ``commits`` is a snapshot taken now: iterations committed later need a new connection. The
        table views glob the files at query time and keep only partitions present in ``commits``.
        """
        con = duckdb.connect(":memory:")
        if not self.local:
            con.register_filesystem(self.fs)  # httpfs can't be installed offline; DuckDB calls fsspec
        commits = self._commits()
        con.register("_commits_snapshot", self._commits_table(commits))
        con.execute("CREATE VIEW commits AS SELECT run, iteration, committed_at FROM _commits_snapshot")

        for name, schema in TABLES.items():
            # The empty typed relation fixes column names, order and types even when no file has a
            # column yet (old partitions) or no file exists at all (read_parquet would fail on an
            # empty glob).
            empty = f"_empty_{name}"
            con.register(empty, _with_partitions(schema).empty_table())
            if not self._table_files(name):
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM {empty}")
                continue
            glob = _sql_str(self._uri(f"{self.root}/{name}/*/*/*.parquet"))
            # hive_types: DuckDB would infer iteration as BIGINT and a run named "123" as a number.
            con.execute(
                f"CREATE VIEW {name} AS SELECT * FROM {empty} UNION ALL BY NAME "
                f"SELECT t.* FROM read_parquet({glob}, hive_partitioning = true, union_by_name = true, "
                "hive_types = {'run': 'VARCHAR', 'iteration': 'INTEGER'}) t "
                "SEMI JOIN commits USING (run, iteration)"
            )
        return con

    def _commits_table(self, commits: list[tuple[str, int, str]]) -> pa.Table:
        committed_at = []
        if commits:
            blobs = self.fs.cat([p for _, _, p in commits])  # one batched request on object stores
            for _, _, p in commits:
                try:
                    committed_at.append(datetime.fromisoformat(json.loads(blobs[p])["committed_at"]))
                except (KeyError, ValueError, TypeError):
                    committed_at.append(None)  # the marker's existence is what counts
        return pa.table(
            {
                "run": pa.array([r for r, _, _ in commits], pa.string()),
                "iteration": pa.array([it for _, it, _ in commits], pa.int32()),
                "committed_at": pa.array(committed_at, pa.timestamp("us", tz="UTC")),
            }
        )


def open_store(url: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> Store:
    return Store(url, storage_options)


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
    """``data`` cast to ``table``'s schema, with missing optional columns as NULL and schema_version set.

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

    cols = [pa.array([SCHEMA_VERSION] * n_rows, pa.int32())]
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


def _check_key(run: str, iteration: int) -> None:
    if not isinstance(run, str) or not _RUN_RE.match(run):
        raise ValueError(f"run must match {_RUN_RE.pattern} (it is a path segment), got {run!r}")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or not 0 <= iteration < 2**31:
        raise ValueError(f"iteration must be an int in [0, 2**31), got {iteration!r}")


def _sql_str(s: str) -> str:
    """A SQL string literal for a path we built ourselves (never a user value: those are parameters)."""
    return "'" + s.replace("'", "''") + "'"
