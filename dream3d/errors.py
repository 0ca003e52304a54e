"""The one exception type for bad input.

Library code raises :class:`UserError` (or a subclass) when the caller asked for something that
cannot work: a missing model, a bad size, an unwritable folder. The message is one line that names
the problem and the fix. The command line prints it without a traceback and exits with code 2.
"""


class UserError(Exception):
    """Bad input from the user: one line naming the problem and the fix."""

    exit_code = 2


class ConfigError(UserError):
    """A config file or a ``key=value`` override that does not fit the config's schema."""


class ModelLoadError(UserError):
    """A model that cannot be found or is not in the expected layout."""
