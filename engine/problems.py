"""Located problems: what is wrong, where (node id, port, JSON pointer), and what to do about it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a flow document; every check reports all of them at once."""

    code: str
    message: str
    pointer: str = ""
    node_id: str | None = None
    port: str | None = None
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def __str__(self) -> str:
        where = self.pointer or "/"
        if self.node_id:
            where += f" (node {self.node_id}{':' + self.port if self.port else ''})"
        return f"{where}: {self.message}" + (f" — {self.hint}" if self.hint else "")


class FlowInvalid(ValueError):
    """A flow that cannot be loaded or compiled, with every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(str(p) for p in problems[:5]))
        self.problems = problems


def pointer_of(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) from path parts."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)
