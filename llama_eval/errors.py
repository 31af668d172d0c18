"""The one exception type for mistakes a user can fix (bad flag, missing file, bad row)."""


class UserError(Exception):
    """A message that names the bad value and the fix; the CLI prints it and exits 2."""
