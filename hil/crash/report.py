"""The :class:`Report` a crash detector returns: one crash found in a guest's output."""

from __future__ import annotations

from dataclasses import dataclass, field

from hil.crash.kinds import CrashKind


@dataclass(frozen=True)
class Report:
    """One crash report.

    Arguments:
        title: stable name of the bug, ``<kind> in <function>`` where a function is known
            (``KASAN: slab-use-after-free in foo``), addresses and numbers normalised so the
            same bug always gets the same title.
        kind: class of the crash (:class:`~hil.crash.kinds.CrashKind`; a plain name such as
            ``"PANIC"`` is converted, an unknown one raises :class:`ValueError`).
        function: the guilty function, or ``""`` when the report names none.
        start: offset of the first character of the report in the text that was parsed.
        end: offset just past the last line that belongs to the report.
        text: the report excerpt (console prefixes removed).
        corrupted: the report is truncated or interleaved; its title is a best guess.
        parameters: extra facts (e.g. the four bug-check parameters of a BSOD).
    """

    title: str
    kind: CrashKind
    function: str = ""
    start: int = 0
    end: int = 0
    text: str = ""
    corrupted: bool = False
    parameters: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.kind, CrashKind):
            object.__setattr__(self, "kind", CrashKind(self.kind))

    @property
    def fatal(self) -> bool:
        """The guest is dead after this report (see :attr:`CrashKind.fatal`)."""
        return self.kind.fatal

    @property
    def kind_title(self) -> str:
        """The title without the guilty function: the text before ``" in "``."""
        return self.title.split(" in ", 1)[0]

    def __str__(self) -> str:
        return self.title
