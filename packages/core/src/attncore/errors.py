"""User-facing errors: anything a user can fix by changing an argument, a config or a file.

The CLIs catch `UserError`, print its message as one line and exit non-zero; everything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in user input (config, path, model name, data), reported as one line."""

    exit_code = 2


class ConfigError(UserError):
    """A config file or override that does not validate."""
