"""The one base of the errors a user can fix, and what each kind means for a command's exit code.

A stage (``sbir.stage.run_stage``) reports these as one line naming the stage, the kind and the message, and
exits with the kind's code; anything else is a bug and keeps its traceback. Exit codes: 1 bad data (also a data
gate that fails), 2 bad configuration, a model or model store that cannot be used as asked.
"""

from __future__ import annotations


class SbirError(Exception):
    """An error the user can fix: what is wrong, where, and what was expected."""

    kind = "error"
    exit_code = 2


class ConfigError(SbirError, ValueError):
    """A params file or section that does not fit what the stage expects."""

    kind = "configuration"
    exit_code = 2


class DataError(SbirError, ValueError):
    """Input data (a dataset, a manifest, stored embeddings) that is missing or not what it should be."""

    kind = "data"
    exit_code = 1


class ModelError(SbirError, ValueError):
    """A model folder, backbone or its weights that cannot be used as asked."""

    kind = "model"
    exit_code = 2


class StoreError(SbirError, ValueError):
    """The model store or its champion ledger refuses the operation."""

    kind = "model store"
    exit_code = 2


# Files a user names or must bring (a missing dataset folder, an unreadable file): their message says which.
FILE_ERRORS: tuple[type[OSError], ...] = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
FILE_ERROR_EXIT = 1
