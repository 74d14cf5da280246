"""The errors of an ordinary mistake (bad config, missing or invalid file, unknown name).

Every such error subclasses ``UserError``: the command line prints it as one line naming
the culprit and exits 2, with no traceback. This module imports nothing, so every layer
(contracts, spaces, methods, stages, views) may raise them.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the config key, file or field."""


class ConfigError(UserError, ValueError):
    """A bad configuration; the message names the config key or file."""


class DataSourceError(UserError, ValueError):
    """A data source that cannot be read; the message names the file or the config key."""
