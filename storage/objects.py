"""The few file operations the store needs, each atomic on both backends (a local dir, an object store).

- ``write_atomic``: readers see the old content or the new, never a torn file. Locally a temp name plus
  ``os.replace``; on S3 one PUT, or one multipart upload completed in one step.
- ``create_only``: writes only if the path doesn't exist yet; the basis of commit markers and locks.
  Locally a temp file hard-linked to the name (``link`` fails if the name exists); on S3 a PUT with
  ``If-None-Match: *``.

Two clients per store: fsspec (s3fs) for listings, small objects and conditional PUTs, and a pyarrow
filesystem for Parquet data. pyarrow's own S3 client reads and writes without a Python call per request
and with many requests in flight, which made a GROUP BY over 20 files on SeaweedFS 10x faster than
DuckDB reading through fsspec (bench/store.py). Other fsspec protocols get pyarrow's fsspec wrapper.

Settings for object stores (``storage_options``): explicit options win; otherwise the standard AWS
variables apply (credentials are read by botocore / the AWS SDK, the endpoint from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` here, so it works with any client version).
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, BinaryIO

import fsspec
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem

_S3 = ("s3", "s3a")


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, root path without protocol) for a store URL."""
    fs, root = fsspec.core.url_to_fs(url, **resolve_options(url, storage_options))
    return fs, root.rstrip("/")


def resolve_options(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` completed from the environment for ``url``'s protocol."""
    options = dict(storage_options or {})
    if fsspec.utils.get_protocol(url) in _S3:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_url" not in options and "endpoint_url" not in options.get("client_kwargs", {}):
            options["endpoint_url"] = endpoint
        # Readers must see commits made by other processes at once; s3fs caches listings by default.
        options.setdefault("use_listings_cache", False)
    return options


# s3fs option -> pyarrow.fs.S3FileSystem argument; options that only tune s3fs itself are dropped.
_S3FS_TO_ARROW = {"key": "access_key", "secret": "secret_key", "token": "session_token", "anon": "anonymous"}
_S3FS_ONLY = {"use_listings_cache", "listings_expiry_time", "max_paths", "skip_instance_cache",
              "default_block_size", "default_cache_type", "default_fill_cache", "max_concurrency",
              "cache_regions", "asynchronous", "loop"}


def arrow_filesystem(fs: fsspec.AbstractFileSystem, url: str,
                     storage_options: dict[str, Any] | None) -> pafs.FileSystem:
    """A pyarrow filesystem for the store's data files, with the same endpoint and credentials as ``fs``."""
    if is_local(fs):
        return pafs.LocalFileSystem()
    if fsspec.utils.get_protocol(url) in _S3:
        kwargs = _arrow_s3_kwargs(resolve_options(url, storage_options))
        if kwargs is not None:
            return pafs.S3FileSystem(**kwargs)
    # Anything we can't map exactly (another protocol, an s3fs-only setting such as a profile) goes through
    # fsspec: slower, but it uses exactly the client the rest of the store uses.
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _arrow_s3_kwargs(options: dict[str, Any]) -> dict[str, Any] | None:
    options = dict(options)
    client = dict(options.pop("client_kwargs", None) or {})
    endpoint = options.pop("endpoint_url", None) or client.pop("endpoint_url", None)
    region = client.pop("region_name", None)
    kwargs: dict[str, Any] = {}
    for name, value in options.items():
        if name in _S3FS_TO_ARROW:
            kwargs[_S3FS_TO_ARROW[name]] = value
        elif name not in _S3FS_ONLY:
            return None
    if client:
        return None
    if endpoint:
        scheme, sep, host = str(endpoint).partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme) if sep else kwargs.update(endpoint_override=scheme)
    if region:
        kwargs["region"] = region
    return kwargs


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, write: Callable[[BinaryIO], None] | bytes) -> None:
    """Write ``path`` in one visible step; ``write`` is bytes or a function that writes to a file."""
    writer = write if callable(write) else (lambda f: f.write(write))
    if not is_local(fs):
        with fs.open(path, "wb") as f:  # one PUT (or a multipart upload completed in one step)
            writer(f)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # The temp name must not end in .parquet/.json, or a reader's glob could pick up a half-written file.
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            writer(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def create_only(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write ``data`` to ``path`` if nothing is there yet; False if something is. Atomic on both backends."""
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Write a temp file, then hard-link it: link() is atomic and fails if the name exists, so the file
        # is never seen half written (open(path, "xb") alone would be create-only but not atomic).
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                    raise
                try:  # file systems without hard links: create-only, though not atomic
                    with open(path, "xb") as f:
                        f.write(data)
                    return True
                except FileExistsError:
                    return False
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    for attempt in range(5):
        try:
            fs.pipe_file(path, data, mode="create")  # s3fs: PUT with If-None-Match: *
            return True
        except FileExistsError:
            return False
        except OSError as e:
            # s3fs maps 412 PreconditionFailed to EINVAL, not FileExistsError (SeaweedFS, AWS), so look at
            # the S3 error itself. 409: another conditional PUT of this key is in flight; retry.
            status = _s3_status(e)
            if status == 412:
                return False
            if status != 409 or attempt == 4:
                raise
            time.sleep(0.05 * 2**attempt)
    return False  # not reached


def _s3_status(e: BaseException) -> int | None:
    """HTTP status of the S3 error behind an s3fs OSError (botocore's ClientError is its cause)."""
    response = getattr(e.__cause__, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes | None:
    """Content of ``path``, or None if it doesn't exist."""
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def remove(fs: fsspec.AbstractFileSystem, paths: list[str] | str) -> None:
    """Delete files; ones already gone are fine (another cleanup got there first)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        return
    if is_local(fs):
        for p in paths:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
        return
    try:
        fs.rm(paths)  # one batched DeleteObjects on S3
    except FileNotFoundError:
        pass


def list_files(afs: pafs.FileSystem, directory: str, suffix: str = "", recursive: bool = False) -> list[str]:
    """Files in ``directory`` (and below, if ``recursive``) ending in ``suffix``; [] if it doesn't exist."""
    selector = pafs.FileSelector(directory, recursive=recursive, allow_not_found=True)
    return sorted(i.path for i in afs.get_file_info(selector)
                  if i.type == pafs.FileType.File and i.path.endswith(suffix))


def read_many(afs: pafs.FileSystem, paths: list[str]) -> dict[str, bytes]:
    """Contents of many small files, fetched concurrently (an object store answers each GET in ms)."""
    def one(path: str) -> tuple[str, bytes]:
        with afs.open_input_stream(path) as f:
            return path, f.read()

    if len(paths) < 2 or isinstance(afs, pafs.LocalFileSystem):
        return dict(map(one, paths))
    with ThreadPoolExecutor(min(32, len(paths))) as pool:  # pyarrow releases the GIL while it waits
        return dict(pool.map(one, paths))


def invalidate(fs: fsspec.AbstractFileSystem) -> None:
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()  # decisions below need fresh listings
