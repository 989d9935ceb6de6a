"""The one error type users see: a single line naming the field and what is allowed."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user or from an untrusted file.

    `field` names what was wrong (a CLI flag, a RunConfig field, a file); the message
    says what is allowed. The CLI prints `error: <field>: <message>` and exits 2.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


def from_validation_error(exc, prefix: str = "") -> InputError:
    """Turn a pydantic ValidationError into an InputError about its first problem."""
    from vramplan.text import shown, shown_value

    first = exc.errors(include_url=False)[0]
    location = shown(".".join(str(part) for part in first.get("loc", ()) if part != "__root__"))
    field = f"{prefix}{location}" if location else prefix.rstrip(".")
    message = first.get("msg", str(exc)).replace("Value error, ", "")
    if "input" in first and first.get("type") not in ("missing",):
        message = f"{message} (got {shown_value(first['input'])})"
    return InputError(field or "input", message)
