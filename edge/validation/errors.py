"""One error type for every build file that cannot be read, so callers handle a single case."""

from __future__ import annotations


class InvalidBuildFile(Exception):
    """A build file that is broken, hostile or outside the limits; says what is wrong and where."""

    def __init__(self, reason: str, where: str = "", *, kind: str = "invalid") -> None:
        self.reason = reason
        self.where = where
        # kind is a short stable token (e.g. "stl_count_mismatch") for programs and tests;
        # the reason is the sentence a person reads.
        self.kind = kind
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The reason followed by the location, as shown to an operator."""
        return f"{self.reason} ({self.where})" if self.where else self.reason
