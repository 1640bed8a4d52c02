"""Located problems: what is wrong, where (node id, port, JSON pointer), and what to do about it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

# An answer lists at most this many problems, then one saying how many more there are: a document of thousands of
# broken nodes still gets an answer of bounded size (issue #41, V3), and nobody reads past the first screens anyway.
MAX_PROBLEMS: Final = 200
MORE_PROBLEMS: Final = "more_problems"  # the code of that last, summary problem


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
    """A flow that cannot be loaded or compiled, with every problem found: the first MAX_PROBLEMS of them, then one
    saying how many more there are (`total` counts them all)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(str(p) for p in problems[:5]))
        self.total = len(problems)
        self.problems = problems[:MAX_PROBLEMS]
        if self.total > MAX_PROBLEMS:
            more = self.total - MAX_PROBLEMS
            self.problems.append(Problem(MORE_PROBLEMS, f"{more:,} more problems not shown ({self.total:,} in all)",
                                         hint="fix these first; the rest are listed once they fit"))  # fmt: skip


def pointer_of(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) from path parts."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)
