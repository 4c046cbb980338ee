"""Typed failures of the jobs: each says what went wrong and what to run instead. The command files
print them and exit 1; nothing here prints."""

from __future__ import annotations


class JobError(Exception):
    """A job could not do what it was asked; its message is for the person who asked."""


class ActivationRefused(JobError):
    """The version is published, but the database refused to make it active."""

    def __init__(self, version: str, reason: str):
        super().__init__(
            f"{version} is published but not active: the database is not ready ({reason}); "
            f"run `fascl db upgrade`, then `fascl index activate {version}`"
        )
        self.version = version


class ReuseUnavailable(JobError):
    """The version named to take unchanged dates from cannot be opened."""


class EvaluationRefused(JobError):
    """An evaluation's methods, models or period are not usable as given."""
