"""The one exception a user can cause: the CLI prints its message on one line and exits with status 2."""


class StudyError(Exception):
    """Bad input (a study file, an override, a data folder): the message names the key or file."""
