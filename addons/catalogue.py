"""Documented event names: is a decoded event in Microsoft's published lists, and at which level?

Pure module. The lists ship in ``signatures/catalogue/`` (extracts of Microsoft's documentation, see the
SOURCE.md there). ``classify`` answers one of:

* ``windows-required``: a Windows 11 24H2 required diagnostic event;
* ``office-essential-service``: an event of an Office essential service (sent even at "Neither");
* ``office-required``: an Office required diagnostic data event;
* ``undocumented``: none of the above (including ``None`` and empty names).

When a name is in more than one list, the order above decides: the Windows and Office namespaces do not
overlap, and the two names in both Office lists are classified as essential, the stronger statement
(they cannot be switched off).

Name normalisation, applied to documented and observed names alike:

1. surrounding whitespace is removed and the name is case-folded (Office docs and clients disagree on
   case, e.g. ``Office.Outlook.Desktop`` vs ``office.outlook.desktop``);
2. documented headings are cleaned: platform notes in parentheses (``… (on iOS)``) are removed, headings
   listing alternatives separated by commas become one entry per name, and a name with a stray space
   (``Office.Manageability.Client Fetch.PolicyPreChecks``) is also indexed without it;
3. an observed name of the form ``Aria.<32 hex>.<name>`` (the Aria/1DS tenant-prefixed form) that is not
   itself documented is also looked up as ``<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

OFFICE_REQUIRED = "office-required"
OFFICE_ESSENTIAL = "office-essential-service"
WINDOWS_REQUIRED = "windows-required"
UNDOCUMENTED = "undocumented"

# Highest first: the order in which lists claim a name found in several.
_PRECEDENCE = (WINDOWS_REQUIRED, OFFICE_ESSENTIAL, OFFICE_REQUIRED)

OFFICE_REQUIRED_FILE = "office_required_diagnostic_events.tsv"
OFFICE_ESSENTIAL_FILE = "office_essential_services_events.tsv"
WINDOWS_REQUIRED_FILE = "windows_required_events.txt"

_PARENS = re.compile(r"\s*\([^)]*\)")
_ARIA_PREFIX = re.compile(r"^aria\.[0-9a-f]{32}\.(.+)$")


@dataclass(frozen=True)
class CatalogueEntry:
    name: str  # as documented
    level: str  # one of the classify() answers other than "undocumented"
    section: str  # Office data category / essential service / Windows area
    detail: str | None = None  # Office subtype
    source: str = ""  # file the entry came from


def normalize(name: str) -> str:
    return name.strip().casefold()


def _documented_names(heading: str) -> list[str]:
    names = []
    for part in _PARENS.sub("", heading).split(","):
        part = part.strip()
        if not part:
            continue
        names.append(part)
        if " " in part:
            names.append(part.replace(" ", ""))
    return names


def _rows(path: Path) -> Iterable[list[str]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            yield line.rstrip("\n").split("\t")


def default_dir() -> Path:
    from .resources import signatures_dir

    return signatures_dir() / "catalogue"


class EventCatalogue:
    def __init__(self, entries: Iterable[CatalogueEntry]):
        rank = {level: i for i, level in enumerate(_PRECEDENCE)}
        self._index: dict[str, CatalogueEntry] = {}
        for entry in entries:
            for name in _documented_names(entry.name):
                key = normalize(name)
                current = self._index.get(key)
                if current is None or rank[entry.level] < rank[current.level]:
                    self._index[key] = entry

    @classmethod
    def load(cls, directory: Path | None = None) -> EventCatalogue:
        """Read the three lists from ``directory`` (default: the bundled ``signatures/catalogue``)."""
        d = Path(directory) if directory is not None else default_dir()
        entries: list[CatalogueEntry] = []
        for row in _rows(d / OFFICE_REQUIRED_FILE):
            if len(row) >= 2:
                entries.append(CatalogueEntry(row[0], OFFICE_REQUIRED, row[1], row[2] if len(row) > 2 else None,
                                              OFFICE_REQUIRED_FILE))
        for row in _rows(d / OFFICE_ESSENTIAL_FILE):
            if len(row) >= 2:
                entries.append(CatalogueEntry(row[0], OFFICE_ESSENTIAL, row[1], None, OFFICE_ESSENTIAL_FILE))
        for row in _rows(d / WINDOWS_REQUIRED_FILE):
            # Rows marked as common-field blocks are schema parts, not events.
            if len(row) >= 2 and "not an event" not in row[0] and "included by other events" not in row[0]:
                entries.append(CatalogueEntry(row[1], WINDOWS_REQUIRED, row[0], None, WINDOWS_REQUIRED_FILE))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, event_name: str | None) -> CatalogueEntry | None:
        if not event_name:
            return None
        key = normalize(event_name)
        entry = self._index.get(key)
        if entry is None:
            m = _ARIA_PREFIX.match(key)
            if m:
                entry = self._index.get(m.group(1))
        return entry

    def classify(self, event_name: str | None) -> str:
        entry = self.lookup(event_name)
        return entry.level if entry else UNDOCUMENTED
