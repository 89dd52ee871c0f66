"""Dataset loaders. Each returns a list of :class:`stepcoder.problems.Problem`."""

from __future__ import annotations

from stepcoder.datasets.errors import DatasetError
from stepcoder.problems import Problem

DATASETS = ("mbpp",)


def load_problems(dataset: str, path: str | None = None, split: str | None = None) -> list[Problem]:
    """Load a dataset by name; unknown names raise with the list of valid ones."""
    if dataset == "mbpp":
        from stepcoder.datasets.mbpp import load_mbpp

        return load_mbpp(path, split)
    raise DatasetError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")


__all__ = ["DATASETS", "DatasetError", "load_problems"]
