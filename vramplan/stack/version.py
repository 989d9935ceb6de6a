"""Release versions as tuples of integers, compared the way version ranges in the rules need.

"0.43.1" < "0.43.2" < "4.46" == "4.46.0"; a local or pre-release tail ("2.13.0+cpu", "5.0.0rc1",
"0.44.0.dev0") is dropped: the rules are keyed by release number, and a release candidate of a
version is planned as that version. No `packaging` dependency: the planner core imports nothing
outside the standard library and pydantic.
"""
from __future__ import annotations

import re

_RELEASE = re.compile(r"(\d+(?:\.\d+){0,3})")
_WHOLE = re.compile(r"\d+(?:\.\d+){0,3}(?:(?:a|b|rc|\.dev|\.post|dev|post)\d*)?(?:\+[A-Za-z0-9.]+)?")


class Version(tuple):
    """A release number: `Version.parse("0.43.1") == (0, 43, 1)`; trailing zeros do not count."""

    @classmethod
    def parse(cls, text: str) -> "Version":
        """The release number of `text`; ValueError unless it is digits and dots (at most four parts)
        with an optional pre/dev/post tail and local label."""
        cleaned = str(text).strip()
        if not _WHOLE.fullmatch(cleaned):
            raise ValueError(f"not a version number: {text!r} (give digits and dots, like 4.46 or 0.43.1)")
        parts = [int(part) for part in _RELEASE.match(cleaned).group(1).split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return cls(parts)

    def _key(self, other) -> tuple[tuple, tuple]:
        other = other if isinstance(other, Version) else Version.parse(other)
        width = max(len(self), len(other))
        return tuple(self) + (0,) * (width - len(self)), tuple(other) + (0,) * (width - len(other))

    def __lt__(self, other):
        mine, theirs = self._key(other)
        return mine < theirs

    def __le__(self, other):
        mine, theirs = self._key(other)
        return mine <= theirs

    def __gt__(self, other):
        mine, theirs = self._key(other)
        return mine > theirs

    def __ge__(self, other):
        mine, theirs = self._key(other)
        return mine >= theirs

    def __eq__(self, other):
        if not isinstance(other, (Version, str)):
            return NotImplemented
        mine, theirs = self._key(other)
        return mine == theirs

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self):
        return tuple.__hash__(self)

    def within(self, first: str | None = None, before: str | None = None) -> bool:
        """first <= self < before; either end may be None (open)."""
        return (first is None or self >= first) and (before is None or self < before)

    def __str__(self) -> str:
        return ".".join(str(part) for part in self)

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"
