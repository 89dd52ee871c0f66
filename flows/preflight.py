"""Checks a run makes before Prefect starts, so a user's mistake is one clear line instead of a traceback from
deep inside a task: the model must resolve, and the store and the checkpoint directory must be writable (for an
object store: reachable)."""

from __future__ import annotations

import os
import uuid
from typing import Any


def preflight(cfg: Any) -> list[str]:
    """One message per problem found (empty: go ahead). Each names the config field and its value."""
    problems = []
    from stepcoder.models import NAMED_MODELS, resolve_model

    if cfg.model.path not in NAMED_MODELS:  # named models are prepared on first use, by the run itself
        try:
            resolve_model(cfg.model.path)
        except (FileNotFoundError, OSError, ValueError) as e:
            problems.append(str(e))
    for field, url in (("store", cfg.store), ("checkpoint_dir", cfg.checkpoint_dir)):
        why = _not_writable(str(url), cfg.store_options if field == "store" else None)
        if why:
            problems.append(f"{field}={url!r}: {why}")
    return problems


def _not_writable(url: str, options: dict[str, Any] | None) -> str | None:
    if "://" in url and not url.startswith("file://"):
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(url, **(options or {}))
            fs.ls(path.split("/", 1)[0], detail=False)  # the bucket: reachable, and our credentials work
        except Exception as e:  # noqa: BLE001 - whatever the client raises, say it in one line
            return f"cannot reach the object store ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        return None
    path = url.removeprefix("file://")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-probe-{uuid.uuid4().hex}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        return f"not a writable directory ({e.strerror or e})"
    return None
