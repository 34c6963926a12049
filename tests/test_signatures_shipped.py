"""The shipped signature set, the SQLite rows, the hash, the M365/hosts importers and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from teletap.cli_signatures import signatures as cli
from teletap.resources import signatures_dir
from teletap.signature_import import export_hosts, export_zeek_intel, import_hosts, import_m365
from teletap.signatures import CATEGORIES, Matcher, SignatureSet, lint, run_examples, signature_rows

M365_DIR = Path("/work/shared/data/m365-endpoints")
M365_FILES = sorted(M365_DIR.glob("*.json")) if M365_DIR.is_dir() else []
needs_m365 = pytest.mark.skipif(not M365_FILES, reason="research data not present")


@pytest.fixture(scope="module")
def shipped() -> SignatureSet:
    return SignatureSet.load()


def test_shipped_set_lints_clean() -> None:
    assert [str(e) for e in lint([signatures_dir()])] == []


def test_shipped_examples_all_pass(shipped: SignatureSet) -> None:
    count, failures = run_examples(shipped)
    assert count >= len(shipped.signatures)
    assert [str(f) for f in failures] == []


def test_every_shipped_signature_has_provenance_and_examples(shipped: SignatureSet) -> None:
    for s in shipped.signatures:
        assert s.documentation["urls"] and s.documentation["checked"], s.id
        assert s.documentation_url and s.documentation_url.startswith("https://"), s.id
        assert s.examples["match"], s.id


def test_shipped_set_covers_the_required_areas(shipped: SignatureSet) -> None:
    m = Matcher(shipped)
    expected = {
        "v10.events.data.microsoft.com": ("ms.windows.cuet", "diagnostic-data"),
        "watson.telemetry.microsoft.com": ("ms.windows.wer", "crash-reporting"),
        "oca.telemetry.microsoft.com": ("ms.windows.oca", "crash-reporting"),
        "settings-win.data.microsoft.com": ("ms.windows.onesettings", "telemetry-config"),
        "checkappexec.microsoft.com": ("ms.windows.smartscreen", "security-reputation"),
        "activity.windows.com": ("ms.windows.activity-history", "activity-sync"),
        "www.bing.com": ("ms.windows.cortana-bing", "connected-experience"),
        "edge.microsoft.com": ("ms.edge.services", "service"),
        "self.events.data.microsoft.com": ("ms.windows.self-events", "diagnostic-data"),
        "mobile.events.data.microsoft.com": ("ms.m365.mobile-events", "diagnostic-data"),
        "abc.events.data.microsoft.com": ("ms.m365.events-collector", "diagnostic-data"),
        "nexus.officeapps.live.com": ("ms.m365.nexus", "diagnostic-data"),
        "ecs.office.com": ("ms.m365.ecs", "experimentation"),
        "officespeech.platform.bing.com": ("ms.m365.dictation", "connected-experience"),
        "graph.facebook.com": ("thirdparty.facebook.outlook-mobile", "third-party-sharing"),
        "platform.linkedin.com": ("ms.linkedin.platform", "third-party-sharing"),
        "accounts.google.com": ("thirdparty.google.outlook-mobile", "third-party-sharing"),
        "api.dropboxapi.com": ("thirdparty.dropbox.outlook-mobile", "third-party-sharing"),
        "app.box.com": ("thirdparty.box.outlook-mobile", "third-party-sharing"),
        "api.login.yahoo.com": ("thirdparty.yahoo.outlook-mobile", "third-party-sharing"),
        "teams.events.data.microsoft.com": ("ms.teams.telemetry", "diagnostic-data"),
        "www.google-analytics.com": ("thirdparty.google.analytics", "analytics"),
        "app.adjust.com": ("thirdparty.adjust", "advertising"),
    }
    got = {h: (s.id, s.category) if (s := m.match(h)) else None for h in expected}
    assert got == expected
    assert m.match("platform.linkedin.com").data_flow == "vendor-affiliate"  # type: ignore[union-attr]
    assert m.match("graph.facebook.com").data_flow == "third-party"  # type: ignore[union-attr]
    assert m.match("teletap-unknown.example.invalid") is None


# Microsoft's endpoint table for Windows 11 Enterprise, as extracted (source and commit in its header).
WIN11_TSV = Path(__file__).parent / "data" / "windows11_enterprise_endpoints.tsv"


def test_every_windows_11_enterprise_endpoint_is_covered(shipped: SignatureSet) -> None:
    m = Matcher(shipped)
    missing = []
    for line in WIN11_TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        area, _protocol, destination = line.split("\t")[:3]
        host = destination.rstrip("*").replace("*", "teletap")  # 'host*' = any path; '*' elsewhere = any text
        if m.match(host) is None:
            missing.append(f"{area}: {destination}")
    assert missing == []


def test_pinned_endpoint_gets_its_signature_by_sni_alone(shipped: SignatureSet) -> None:
    # A failed TLS handshake only tells us the SNI (and port): no path, method or content type.
    s = Matcher(shipped).match("eu-v10c.events.data.microsoft.com", port=443)
    assert s is not None and s.id == "ms.windows.cuet" and s.expect["tls_pinned"] is True


def test_hash_is_stable_and_independent_of_file_order(tmp_path: Path, shipped: SignatureSet) -> None:
    assert SignatureSet.load().hash == shipped.hash
    files = sorted(signatures_dir().rglob("*.yaml"))
    reversed_set = SignatureSet.load(list(reversed(files)))
    assert reversed_set.hash == shipped.hash
    copy = tmp_path / "copy"
    shutil.copytree(signatures_dir(), copy)
    assert SignatureSet.load([copy]).hash == shipped.hash  # paths are not part of the content
    victim = next(copy.rglob("windows.yaml"))
    victim.write_text(victim.read_text().replace("Windows Error Reporting\n", "Windows Error Reporting (x)\n", 1))
    assert SignatureSet.load([copy]).hash != shipped.hash


def test_signature_rows(shipped: SignatureSet) -> None:
    rows = signature_rows(shipped)
    assert len(rows) == len(shipped.signatures)
    keys = {"id", "name", "vendor", "product", "component", "category", "data_flow", "essential", "levels",
            "controls", "documentation_url", "documentation", "expect", "match", "notes", "source_file"}
    assert all(set(r) == keys for r in rows)
    cuet = next(r for r in rows if r["id"] == "ms.windows.cuet")
    assert cuet["essential"] == 0 and cuet["category"] == "diagnostic-data"
    assert json.loads(cuet["levels"]) == {"windows": ["required", "enhanced", "optional"]}
    assert json.loads(cuet["expect"])["tls_pinned"] is True
    assert "v10c.events.data.microsoft.com" in json.loads(cuet["match"])["hosts"]
    assert json.loads(cuet["documentation"])["checked"] == "2026-11-25"
    assert json.loads(cuet["controls"])[1] == {"type": "mdm", "name": "System/AllowTelemetry"}
    assert cuet["source_file"].endswith("windows.yaml")
    assert {r["essential"] for r in rows} == {0, 1}


# -- importers ---------------------------------------------------------------------------------------------


@needs_m365
@pytest.mark.parametrize("path", M365_FILES, ids=lambda p: p.name)
def test_m365_import_lints_clean_and_examples_pass(tmp_path: Path, path: Path) -> None:
    report = import_m365(json.loads(path.read_text()), checked=dt.date(2026, 11, 25))
    out = tmp_path / "m365.yaml"
    out.write_text(report.yaml("test"))
    assert [str(e) for e in lint([out])] == []
    sigset = SignatureSet.load([out])
    count, failures = run_examples(sigset)
    assert count > 0 and failures == []
    # Imported together with the shipped set: no conflicts (imports have a lower priority).
    assert [str(e) for e in lint([signatures_dir(), out])] == []
    by_id = sigset.by_id()
    s69 = by_id["m365.69"]
    assert s69.category == "diagnostic-data"
    assert set(s69.match.hosts) == {"*.aria.microsoft.com", "*.events.data.microsoft.com"}
    assert s69.imported_from["id"] == 69 and s69.imported_from["required"] is True
    assert s69.imported_from["service_area"] == "Common" and s69.imported_from["network_category"] == "Default"
    assert s69.priority == -10
    assert by_id["m365.156"].category == "activity-sync"
    # LinkedIn, inside the otherwise first-party record 70, is split out as an affiliate.
    li = by_id["m365.70.linkedin"]
    assert li.match.hosts == ("platform.linkedin.com",) and li.data_flow == "vendor-affiliate"


@needs_m365
def test_m365_import_of_older_data_keeps_the_third_parties() -> None:
    data = json.loads((M365_DIR / "endpoints_worldwide_nebula_2024-07.json").read_text())
    report = import_m365(data, checked=dt.date(2026, 11, 25))
    by_id = {s["id"]: s for s in report.signatures}
    fb = by_id["m365.102"]
    assert fb["match"]["hosts"] == ["graph.facebook.com", "m.facebook.com"]
    assert fb["category"] == "third-party-sharing" and fb["data_flow"] == "third-party"
    assert "Facebook integration" in fb["documentation"]["quote"]
    assert by_id["m365.110"]["category"] == "advertising"
    assert by_id["m365.109"]["category"] == "analytics"
    assert any("id 11: no urls" in s for s in report.skipped)
    # watson.telemetry.microsoft.com is in ids 38, 75, 114 and 116: it goes to 38, as crash reporting.
    hosts = [h for s in report.signatures for h in s["match"]["hosts"]]
    assert hosts.count("watson.telemetry.microsoft.com") == 1
    assert by_id["m365.38.crash-reporting"]["match"]["hosts"] == ["watson.telemetry.microsoft.com"]
    # '*cdn.onenote.net' and 'autodiscover.*.onmicrosoft.com' are kept as wildcards.
    assert "*cdn.onenote.net" in hosts and "autodiscover.*.onmicrosoft.com" in hosts


def test_import_hosts_and_export(tmp_path: Path) -> None:
    src = ["# a blocklist", "0.0.0.0 tracker.example.invalid", "127.0.0.1 localhost",
           ":: ads.example.invalid  # trailing comment", "||pixel.example.invalid^", "plain.example.invalid",
           "0.0.0.0 tracker.example.invalid", "bad host here"]
    report = import_hosts(src, vendor="Example Ads", category="advertising", name="test list",
                          documentation_url="https://lists.example.invalid/hosts", checked=dt.date(2026, 1, 1))
    assert report.skipped == ["line 8: expected 'ADDRESS HOST' or 'HOST', got 'bad host here'"]
    [s] = report.signatures
    assert s["id"] == "hosts.example-ads.test-list"
    assert s["match"]["hosts"] == ["tracker.example.invalid", "ads.example.invalid", "pixel.example.invalid",
                                   "plain.example.invalid"]
    out = tmp_path / "hosts.yaml"
    out.write_text(report.yaml())
    assert lint([out]) == []
    sigset = SignatureSet.load([out])
    assert export_hosts(sigset).splitlines()[1:] == [f"0.0.0.0 {h}" for h in s["match"]["hosts"]]
    zeek = export_zeek_intel(sigset).splitlines()
    assert zeek[0] == "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url"
    assert zeek[1].split("\t")[:2] == ["tracker.example.invalid", "Intel::DOMAIN"]
    assert zeek[1].split("\t")[4] == "https://lists.example.invalid/hosts"


def test_export_filters_by_category_and_comments_wildcards(shipped: SignatureSet) -> None:
    text = export_hosts(shipped, "crash-reporting")
    assert "0.0.0.0 watson.telemetry.microsoft.com" in text
    assert "# wildcard, not expressible in a hosts file: *-umwatsonc.events.data.microsoft.com" in text
    assert "0.0.0.0 v10.events.data.microsoft.com" not in text
    zeek = export_zeek_intel(shipped, "crash-reporting")
    assert "*" not in zeek


# -- CLI ---------------------------------------------------------------------------------------------------


def test_cli_lint_ok_and_broken(tmp_path: Path) -> None:
    r = CliRunner()
    ok = r.invoke(cli, ["lint"])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nsignatures:\n  - id: X\n")
    res = r.invoke(cli, ["lint", str(bad)])
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert f"{bad}:3:9: signatures[0].id: expected a stable id of lower-case letters, digits, '.', '_' or '-' " \
           "(at most 100), got 'X'" in lines
    assert f"{bad}:3:5: signatures[0].name: required key missing" in lines
    assert lines[-1] == "8 problem(s)"  # the bad id and seven missing keys


def test_cli_test_reports_failing_examples(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("""\
schema_version: 1
signatures:
  - id: t.one
    name: One
    vendor: Example
    category: service
    data_flow: first-party
    match: {hosts: ["*.example.invalid"]}
    documentation: {urls: ["https://docs.example.invalid/"], checked: 2026-01-01}
    examples: {match: [a.example.invalid, b.example.invalid], no_match: [c.example.invalid]}
  - id: t.two
    name: Two
    vendor: Example
    category: service
    data_flow: first-party
    match: {hosts: [b.example.invalid]}
    documentation: {urls: ["https://docs.example.invalid/"], checked: 2026-01-01}
    examples: {match: [b.example.invalid]}
""")
    res = CliRunner().invoke(cli, ["test", str(f)])
    assert res.exit_code == 1
    assert f"{f}:3: t.one: example 'b.example.invalid' should match this signature, matched 't.two' instead" \
        in res.output
    assert f"{f}:3: t.one: example 'c.example.invalid' must not match this signature, but does" in res.output
    assert "2 signatures, 4 examples, 2 failure(s)" in res.output
    assert CliRunner().invoke(cli, ["test"]).exit_code == 0


def test_cli_match() -> None:
    res = CliRunner().invoke(cli, ["match", "POST https://eu-mobile.events.data.microsoft.com/OneCollector/1.0/",
                                   "teletap-nothing.example.invalid"])
    assert res.exit_code == 0
    assert res.output.splitlines() == [
        "POST https://eu-mobile.events.data.microsoft.com/OneCollector/1.0/\tms.m365.mobile-events\t"
        "diagnostic-data\tMicrosoft\tfirst-party\t"
        "https://github.com/MicrosoftDocs/defender-docs/blob/public/defender-endpoint/"
        "microsoft-defender-core-service-overview.md",
        "teletap-nothing.example.invalid\tundocumented",
    ]
    js = CliRunner().invoke(cli, ["match", "--json", "graph.facebook.com"])
    assert json.loads(js.output) == {
        "target": "graph.facebook.com", "signature_id": "thirdparty.facebook.outlook-mobile",
        "category": "third-party-sharing", "vendor": "Meta", "data_flow": "third-party",
        "documentation_url": "https://learn.microsoft.com/microsoft-365/enterprise/urls-and-ip-address-ranges"}


@needs_m365
def test_cli_import_m365_then_use_it(tmp_path: Path) -> None:
    out = tmp_path / "m365.yaml"
    src = M365_DIR / "m365_worldwide_2022072800_privacy_relevant.json"
    res = CliRunner().invoke(cli, ["import", "m365", str(src), "-o", str(out), "--checked", "2026-11-25"])
    assert res.exit_code == 0, res.output
    assert CliRunner().invoke(cli, ["lint", str(out)]).exit_code == 0
    res = CliRunner().invoke(cli, ["match", "-s", str(out), "x.cortana.ai"])
    assert res.output.split("\t")[:2] == ["x.cortana.ai", "m365.158"]


def test_cli_import_hosts_and_export(tmp_path: Path) -> None:
    src = tmp_path / "list.txt"
    src.write_text("0.0.0.0 one.example.invalid\ntwo.example.invalid\n")
    out = tmp_path / "list.yaml"
    res = CliRunner().invoke(cli, ["import", "hosts", str(src), "--vendor", "Example", "--category", "analytics",
                                   "--documentation-url", "https://lists.example.invalid/", "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["export", "hosts", "-s", str(out)])
    assert res.output.splitlines()[1:] == ["0.0.0.0 one.example.invalid", "0.0.0.0 two.example.invalid"]
    res = CliRunner().invoke(cli, ["import", "hosts", str(src), "--vendor", "E", "--category", "nope",
                                   "--documentation-url", "https://x.example.invalid/"])
    assert res.exit_code == 2 and "nope" in res.output


def test_category_vocabulary_is_documented() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "signatures.md"
    text = doc.read_text()
    missing = [c for c in CATEGORIES if f"`{c}`" not in text]
    assert missing == []


# A trimmed copy of the web-service format (record contents as in Microsoft's data), so the importer is
# tested even where the research data folder is absent. Record 9001 is synthetic: a '<tenant>' placeholder.
M365_SAMPLE = [
    {"id": 11, "serviceArea": "Skype", "serviceAreaDisplayName": "Skype for Business Online and Microsoft Teams",
     "ips": ["13.107.64.0/18", "52.112.0.0/14"], "udpPorts": "3478,3479,3480,3481", "category": "Optimize",
     "expressRoute": True, "required": True},
    {"id": 51, "serviceArea": "Common", "urls": ["*cdn.onenote.net"], "tcpPorts": "443", "category": "Default",
     "expressRoute": False, "required": True},
    {"id": 68, "serviceArea": "Common", "urls": ["*.helpshift.com", "connect.facebook.net",
                                                 "telemetryservice.firstpartyapps.oaspapps.com"],
     "tcpPorts": "443", "category": "Default", "expressRoute": False, "required": False,
     "notes": "Portal and shared: 3rd party office integration. (including CDNs)"},
    {"id": 69, "serviceArea": "Common", "urls": ["*.aria.microsoft.com", "*.events.data.microsoft.com"],
     "tcpPorts": "443", "category": "Default", "expressRoute": False, "required": True},
    {"id": 102, "serviceArea": "Common", "urls": ["graph.facebook.com", "m.facebook.com"], "tcpPorts": "443",
     "category": "Default", "expressRoute": False, "required": False,
     "notes": "Outlook for Android and iOS: Facebook integration"},
    {"id": 154, "serviceArea": "Exchange", "urls": ["autodiscover.*.onmicrosoft.com"], "tcpPorts": "80,443",
     "category": "Default", "expressRoute": False, "required": True},
    {"id": 9001, "serviceArea": "SharePoint", "urls": ["<tenant>-my.sharepoint.com", "m.facebook.com",
                                                       "www.bing.com*"],
     "tcpPorts": "443", "category": "Optimize", "expressRoute": True, "required": True},
]


def test_m365_import_of_the_web_service_format(tmp_path: Path) -> None:
    report = import_m365(M365_SAMPLE, version="2026010100", checked=dt.date(2026, 1, 2))
    assert report.skipped == ["id 11: no urls (IP ranges only: 2 ranges)"]
    by_id = {s["id"]: s for s in report.signatures}
    assert sorted(by_id) == ["m365.102", "m365.154", "m365.51", "m365.68", "m365.68.helpshift",
                             "m365.68.meta", "m365.69", "m365.9001"]
    assert by_id["m365.68"]["match"]["hosts"] == ["telemetryservice.firstpartyapps.oaspapps.com"]
    assert by_id["m365.68"]["category"] == "diagnostic-data"  # host table beats the record's category
    assert by_id["m365.68.meta"]["category"] == "third-party-sharing"
    assert by_id["m365.9001"]["match"]["hosts"] == ["*-my.sharepoint.com", "www.bing.com"]
    assert by_id["m365.9001"]["notes"] == "Also listed in this record: m.facebook.com (first listed in id 102)"
    assert by_id["m365.69"]["imported_from"] == {
        "source": "Microsoft 365 endpoints web service", "version": "2026010100", "id": 69, "service_area": "Common",
        "network_category": "Default", "required": True, "express_route": False, "tcp_ports": "443",
        "ip_ranges": 0}
    assert by_id["m365.69"]["documentation"]["quote"] == "id 69 (Common, Default, required=true)"
    out = tmp_path / "sample.yaml"
    out.write_text(report.yaml("sample"))
    assert [str(e) for e in lint([out])] == []
    sigset = SignatureSet.load([out])
    assert run_examples(sigset)[1] == []
    m = Matcher(sigset)
    assert m.match("contoso-my.sharepoint.com").id == "m365.9001"  # type: ignore[union-attr]
    assert m.match("autodiscover.contoso.onmicrosoft.com").id == "m365.154"  # type: ignore[union-attr]
    assert m.match("cdn.onenote.net").id == "m365.51"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="expected the endpoints web-service JSON"):
        import_m365({"unexpected": True})
