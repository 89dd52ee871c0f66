"""Errors raised by dataset loaders."""


class DatasetError(ValueError):
    """A dataset record or file is malformed. The message names the file and line, or the folder."""
