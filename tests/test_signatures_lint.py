"""Linter: every kind of broken signature file gets a precise ``file:line:column: key: message``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teletap.signatures import SignatureError, SignatureSet, lint

GOOD = """\
schema_version: 1
signatures:
  - id: test.good
    name: Good signature
    vendor: Example Corp
    category: diagnostic-data
    data_flow: first-party
    match:
      hosts: [collector.example.invalid]
    documentation:
      urls: [https://docs.example.invalid/endpoints]
      checked: 2026-01-31
    examples:
      match: [https://collector.example.invalid/upload]
"""


def write(tmp_path: Path, text: str, name: str = "sigs.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def only_error(path: Path) -> str:
    errors = lint([path])
    assert len(errors) == 1, [str(e) for e in errors]
    return str(errors[0])


def test_good_file_is_clean(tmp_path: Path) -> None:
    assert lint([write(tmp_path, GOOD)]) == []


def test_bad_yaml(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("hosts: [collector.example.invalid]", "hosts: [collector.example.invalid"))
    # The parser notices the unclosed list at the ':' of the next key ("    documentation:").
    assert only_error(p) == (
        f"{p}:10:18: yaml: invalid YAML: while parsing a flow sequence; expected ',' or ']', but got ':'")


def test_unknown_key(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    vendor: Example Corp\n", "    vendor: Example Corp\n    colour: red\n"))
    assert only_error(p) == (
        f"{p}:6:5: signatures[0].colour: unknown key; expected one of: id, name, vendor, product, component, "
        "category, data_flow, match, expect, levels, controls, essential, documentation, examples, notes, "
        "priority, deprecated, imported_from")


def test_unknown_key_in_match(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("      hosts: [collector.example.invalid]\n",
                                     "      hosts: [collector.example.invalid]\n      path: /x\n"))
    assert only_error(p) == (
        f"{p}:10:7: signatures[0].match.path: unknown key; expected one of: hosts, host_regex, path_prefix, "
        "path_glob, path_regex, methods, ports, content_types")


def test_wrong_type_boolean(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    data_flow: first-party\n",
                                     "    data_flow: first-party\n    essential: yes please\n"))
    assert only_error(p) == f"{p}:8:16: signatures[0].essential: expected true or false, got a string ('yes please')"


def test_wrong_type_list(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("hosts: [collector.example.invalid]", "hosts: collector.example.invalid"))
    assert only_error(p) == (
        f"{p}:9:14: signatures[0].match.hosts: expected a list, got a string ('collector.example.invalid')")


def test_wrong_type_port(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("      hosts: [collector.example.invalid]\n",
                                     "      hosts: [collector.example.invalid]\n      ports: [443, 70000]\n"))
    assert only_error(p) == f"{p}:10:20: signatures[0].match.ports[1]: expected an integer from 1 to 65535, got 70000"


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    a = write(tmp_path, GOOD, "a.yaml")
    b = write(tmp_path, GOOD.replace("collector.example.invalid", "other.example.invalid"), "b.yaml")
    errors = lint([a, b])
    assert [str(e) for e in errors] == [f"{b}:3:9: id: duplicate id 'test.good' (first defined at {a}:3)"]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    name: Good signature\n", "    name: Good signature\n    name: Again\n"))
    assert only_error(p) == (
        f"{p}:5:5: signatures[0].name: duplicate key (YAML would silently keep only the last one)")


def test_invalid_regex(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("hosts: [collector.example.invalid]", "host_regex: ['(collector']"))
    assert only_error(p) == f"{p}:9:20: signatures[0].match.host_regex[0]: invalid regex: missing ): (collector"


def test_backreference_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("hosts: [collector.example.invalid]", r"host_regex: ['(a+)\1\.example\.invalid']"))
    assert only_error(p) == (f"{p}:9:20: signatures[0].match.host_regex[0]: invalid regex: backreferences are not "
                             "supported (RE2 guarantees linear-time matching)")


def test_lookaround_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("      hosts: [collector.example.invalid]\n",
                                     "      hosts: [collector.example.invalid]\n"
                                     "      path_regex: ['^/(?!health)upload']\n"))
    assert only_error(p) == (f"{p}:10:20: signatures[0].match.path_regex[0]: invalid regex: lookaround assertions "
                             "are not supported (RE2 guarantees linear-time matching)")


@pytest.mark.parametrize("regex, message", [
    (".*", "dangerous regex: it matches the empty string or any host; expected something specific"),
    ("(a|b)*", "dangerous regex: it matches the empty string or any host; expected something specific"),
    ("a" * 300, "dangerous regex: expected at most 256 characters, got 300"),
    ("((a{90}){90}){90}", "dangerous regex: the compiled program would be too large"),
])
def test_dangerous_regex(tmp_path: Path, regex: str, message: str) -> None:
    p = write(tmp_path, GOOD.replace("hosts: [collector.example.invalid]", f"host_regex: ['{regex}']"))
    err = lint([p])
    assert len(err) == 1
    assert (err[0].line, err[0].column, err[0].key) == (9, 20, "signatures[0].match.host_regex[0]")
    assert err[0].message.startswith(message)


def test_missing_provenance(tmp_path: Path) -> None:
    text = GOOD.replace("    documentation:\n      urls: [https://docs.example.invalid/endpoints]\n"
                        "      checked: 2026-01-31\n", "")
    p = write(tmp_path, text)
    assert only_error(p) == (
        f"{p}:3:5: signatures[0].documentation: missing provenance: expected documentation with urls and checked")


def test_missing_checked_date(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("      checked: 2026-01-31\n", ""))
    assert only_error(p) == (f"{p}:11:7: signatures[0].documentation.checked: missing provenance: expected the date "
                             "the source was checked (YYYY-MM-DD)")


def test_checked_must_be_a_date(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("checked: 2026-01-31", "checked: last week"))
    assert only_error(p) == (
        f"{p}:12:16: signatures[0].documentation.checked: expected a date YYYY-MM-DD, got a string ('last week')")


def test_documentation_url_must_be_http(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("https://docs.example.invalid/endpoints", "docs/endpoints.md"))
    assert only_error(p) == (
        f"{p}:11:14: signatures[0].documentation.urls[0]: expected an http(s) URL, got 'docs/endpoints.md'")


def test_bad_category(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("category: diagnostic-data", "category: telemetry"))
    assert only_error(p) == (
        f"{p}:6:15: signatures[0].category: expected one of: diagnostic-data, telemetry-config, crash-reporting, "
        "experimentation, connected-experience, authentication, licensing, updates-cdn, security-reputation, "
        "activity-sync, advertising, analytics, third-party-sharing, connectivity-check, certificate-validation, "
        "service; got 'telemetry'")


def test_bad_data_flow(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("data_flow: first-party", "data_flow: partner"))
    assert only_error(p) == (
        f"{p}:7:16: signatures[0].data_flow: expected one of: first-party, vendor-affiliate, third-party; "
        "got 'partner'")


def test_conflicting_patterns(tmp_path: Path) -> None:
    second = GOOD.split("signatures:\n", 1)[1].replace("test.good", "test.other")
    p = write(tmp_path, GOOD + second)
    assert only_error(p) == (
        f"{p}:21:7: test.other.match: conflicting patterns: host 'collector.example.invalid' with the same "
        f"constraints is already matched by 'test.good' ({p}:3); narrow one of them or set a different priority")


def test_same_host_with_different_paths_is_not_a_conflict(tmp_path: Path) -> None:
    second = GOOD.split("signatures:\n", 1)[1].replace("test.good", "test.other").replace(
        "      hosts: [collector.example.invalid]\n",
        "      hosts: [collector.example.invalid]\n      path_prefix: [/upload]\n")
    assert lint([write(tmp_path, GOOD + second)]) == []


def test_duplicate_host_within_a_signature(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("hosts: [collector.example.invalid]",
                                     "hosts: [collector.example.invalid, Collector.Example.Invalid.]"))
    assert only_error(p) == (f"{p}:9:42: signatures[0].match.hosts[1]: duplicate host 'collector.example.invalid' "
                             "(already listed at line 9)")


@pytest.mark.parametrize("host, message", [
    ("'*.invalid'", "wildcard '*.invalid' is too broad: expected at least two literal labels after the last '*' "
                    "(e.g. '*.example.com')"),
    ("www.example.invalid*", "'*' in the last label is not a host wildcard ('www.example.invalid*'); Microsoft's "
                             "'host*' means any path on that host: write the host and, if needed, "
                             "match.path_prefix"),
    ("'bad host.example.invalid'", "expected a host name, IP literal or wildcard pattern (letters, digits, '-', "
                                   "'_', '.', '*'), got 'bad host.example.invalid'"),
    ("a..example.invalid", "expected a host name without empty labels, got 'a..example.invalid'"),
])
def test_bad_host_patterns(tmp_path: Path, host: str, message: str) -> None:
    p = write(tmp_path, GOOD.replace("hosts: [collector.example.invalid]", f"hosts: [{host}]"))
    assert only_error(p) == f"{p}:9:15: signatures[0].match.hosts[0]: {message}"


def test_missing_required_key(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    vendor: Example Corp\n", ""))
    assert only_error(p) == f"{p}:3:5: signatures[0].vendor: required key missing"


def test_missing_examples(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    examples:\n      match: [https://collector.example.invalid/upload]\n", ""))
    assert only_error(p) == (
        f"{p}:3:5: signatures[0].examples: expected examples with at least one URL or host under 'match'")


def test_unparseable_example(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("match: [https://collector.example.invalid/upload]",
                                     "match: ['post https://collector.example.invalid/']"))
    assert only_error(p) == (f"{p}:14:15: signatures[0].examples.match[0]: expected '[METHOD ]URL-or-host' with an "
                             "upper-case method, got 'post https://collector.example.invalid/'")


def test_bad_id(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("id: test.good", "id: Test Good"))
    assert only_error(p) == (f"{p}:3:9: signatures[0].id: expected a stable id of lower-case letters, digits, '.', "
                             "'_' or '-' (at most 100), got 'Test Good'")


def test_wrong_schema_version(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("schema_version: 1", "schema_version: 2"))
    assert only_error(p) == f"{p}:1:17: schema_version: expected 1 (this teletap understands version 1), got 2"


def test_empty_file(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    assert only_error(p) == (
        f"{p}:1:1: file: expected a mapping with 'schema_version' and 'signatures', got an empty file")


def test_bad_level(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    data_flow: first-party\n",
                                     "    data_flow: first-party\n    levels: {windows: [basic]}\n"))
    assert only_error(p) == (
        f"{p}:8:24: signatures[0].levels.windows[0]: expected one of: security, required, enhanced, optional; "
        "got 'basic'")


def test_all_problems_are_listed_and_load_raises(tmp_path: Path) -> None:
    text = (GOOD.replace("category: diagnostic-data", "category: nope")
            .replace("data_flow: first-party", "data_flow: nope"))
    p = write(tmp_path, text)
    errors = lint([p])
    assert [(e.line, e.key) for e in errors] == [(6, "signatures[0].category"), (7, "signatures[0].data_flow")]
    with pytest.raises(SignatureError) as info:
        SignatureSet.load([p])
    assert str(info.value).splitlines() == ["2 problem(s) in signature files:", *[str(e) for e in errors]]


def test_alias_bomb_is_not_expanded(tmp_path: Path) -> None:
    # Nested aliases would expand exponentially if the loader built Python objects for them.
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))
    p = write(tmp_path, bomb)
    errors = lint([p])
    assert str(errors[0]).startswith(f"{p}:1:1: a: unknown key; expected one of: schema_version, signatures")


def test_impossible_date(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("checked: 2026-01-31", "checked: 2026-13-45"))
    assert only_error(p) == (f"{p}:12:16: signatures[0].documentation.checked: invalid value '2026-13-45' "
                             "(tag:yaml.org,2002:timestamp): month must be in 1..12")


def test_unsafe_tag_is_refused_not_executed(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    data_flow: first-party\n",
                                     "    data_flow: first-party\n"
                                     "    imported_from: {x: !!python/object/apply:os.getcwd ''}\n"))
    err = lint([p])
    assert len(err) == 1
    assert str(err[0]).startswith(f"{p}:8:24: signatures[0].imported_from.x: invalid value '' "
                                  "(tag:yaml.org,2002:python/object/apply:os.getcwd): could not determine a "
                                  "constructor for the tag")


# -- robustness: whatever the file says, lint reports and never raises ---------------------------------------

_FRAGMENTS = ["schema_version: 1\n", "signatures:\n", "  - id: a.b\n", "    match: {hosts: [x.example.invalid]}\n",
              "    documentation: {urls: [https://d.example.invalid/], checked: 2026-01-01}\n",
              "    examples: {match: [x.example.invalid]}\n", "    name: n\n    vendor: v\n",
              "    category: service\n    data_flow: first-party\n", "    host_regex: ['(a']\n", "&a [*a]\n",
              "!!binary AAAA\n", "? [a, b]\n: c\n", "- - - -\n", "{", "'\n", "\t", "\x00", "checked: 2026-02-30\n",
              "    levels: {windows: [x]}\n", "    controls: [{type: gpo}]\n", "!!python/object:os.system {}\n"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=20)), max_size=12))
def test_lint_never_raises(tmp_path: Path, parts: list[str]) -> None:
    p = tmp_path / "fuzz.yaml"
    p.write_text("".join(parts), encoding="utf-8", errors="surrogatepass")
    for err in lint([p]):
        assert err.file == str(p) and err.line >= 1 and err.column >= 1 and err.message
