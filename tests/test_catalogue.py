"""Event catalogue: documented event names classified by level, with the documented normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from teletap.catalogue import EventCatalogue, default_dir
from teletap.resources import signatures_dir


@pytest.fixture(scope="module")
def cat() -> EventCatalogue:
    return EventCatalogue.load()


def test_ships_with_provenance() -> None:
    d = default_dir()
    assert d == signatures_dir() / "catalogue"
    for name in ("office_required_diagnostic_events.tsv", "office_essential_services_events.tsv",
                 "windows_required_events.txt"):
        head = (d / name).read_text(encoding="utf-8").splitlines()[:3]
        assert any(line.startswith("# Source:") for line in head), name
    assert "CC BY 4.0" in (d / "SOURCE.md").read_text()


def test_sizes_match_the_documented_extracts(cat: EventCatalogue) -> None:
    # 636 + 558 Office names, 212 Windows events (11 common-field blocks excluded), plus the variants the
    # normalisation adds (comma-separated alternatives, names with a stray space), minus overlaps.
    assert 1400 <= len(cat) <= 1450


@pytest.mark.parametrize("name, level", [
    ("Office.Identity.SignOutEvent", "office-essential-service"),
    ("Office.ClickToRun.Bootstrapper", "office-essential-service"),
    ("add.sso.account", "office-required"),
    ("Office.TargetedMessaging.EnsureCached", "office-required"),
    ("Microsoft.Windows.Appraiser.General.ChecksumTotalPictureCount", "windows-required"),
    ("Census.Xbox", "windows-required"),
    ("Aria.160f0649efde47b7832f05ed000fc453.Microsoft.WebBrowser.SystemInfo.Config", "windows-required"),
])
def test_documented_names(cat: EventCatalogue, name: str, level: str) -> None:
    assert cat.classify(name) == level


def test_case_and_whitespace_do_not_matter(cat: EventCatalogue) -> None:
    assert cat.classify("  office.identity.signoutevent ") == "office-essential-service"
    assert cat.classify("CENSUS.XBOX") == "windows-required"


def test_names_in_both_office_lists_are_essential(cat: EventCatalogue) -> None:
    # Listed as required diagnostic data and as an essential-service event: the stronger statement wins.
    assert cat.classify("Office.ClickToRun.UpdateStatus") == "office-essential-service"
    entry = cat.lookup("Office.ClickToRun.UpdateStatus")
    assert entry is not None and entry.section == "Click-to-Run events"


def test_documented_headings_are_split_and_cleaned(cat: EventCatalogue) -> None:
    # Heading: "Office.OneNote.StickyNotes.NoteCreated (on iOS), OneNote.StickyNotes.NoteCreated (on Android)"
    assert cat.classify("Office.OneNote.StickyNotes.NoteCreated") == "office-required"
    assert cat.classify("OneNote.StickyNotes.NoteCreated") == "office-required"
    # Heading with a stray space: "Office.Manageability.Client Fetch.PolicyPreChecks"
    assert cat.classify("Office.Manageability.ClientFetch.PolicyPreChecks") == "office-required"
    assert cat.classify("Office.Manageability.Client Fetch.PolicyPreChecks") == "office-required"


def test_aria_prefix_is_stripped_from_observed_names(cat: EventCatalogue) -> None:
    assert cat.classify("Aria.0123456789abcdef0123456789abcdef.Census.Xbox") == "windows-required"
    assert cat.classify("Aria.notahexkey.Census.Xbox") == "undocumented"


@pytest.mark.parametrize("name", [None, "", "   ", "Office.Teletap.Invented.Event", "Common Data Extensions.app",
                                  "Ms.Device.DeviceInventoryChange"])
def test_undocumented(cat: EventCatalogue, name: str | None) -> None:
    assert cat.classify(name) == "undocumented"


def test_load_from_another_directory(tmp_path: Path) -> None:
    (tmp_path / "office_required_diagnostic_events.tsv").write_text(
        "# Source: test\nTest.Required.Event\tSome category\tSome subtype\n")
    (tmp_path / "office_essential_services_events.tsv").write_text("Test.Essential.Event\tLicensing events\n")
    (tmp_path / "windows_required_events.txt").write_text(
        "Census events\tCensus.Test\nCommon data extensions (common fields, not an event)\tCommon Data Extensions.x\n")
    c = EventCatalogue.load(tmp_path)
    assert len(c) == 3
    assert c.classify("test.required.event") == "office-required"
    assert c.lookup("Test.Required.Event").detail == "Some subtype"  # type: ignore[union-attr]
    assert c.classify("Test.Essential.Event") == "office-essential-service"
    assert c.classify("Census.Test") == "windows-required"
    assert c.classify("Common Data Extensions.x") == "undocumented"
