"""Matcher: precedence rules, normalisation, and property tests against a brute-force reference."""

from __future__ import annotations

import fnmatch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teletap.signatures import Matcher, MatchSpec, Signature, SignatureSet, parse_host_pattern, parse_target


def sig(sid: str, *hosts: str, priority: int = 0, **match: tuple) -> Signature:
    return Signature(id=sid, name=sid, vendor="Example", product=None, component=None, category="service",
                     data_flow="first-party", essential=False, documentation_url=None,
                     match=MatchSpec(hosts=tuple(hosts), **match), priority=priority)


def matcher(*sigs: Signature) -> Matcher:
    return Matcher(SignatureSet.from_signatures(sigs))


def mid(m: Matcher, *args: object, **kwargs: object) -> str | None:
    found = m.match(*args, **kwargs)  # type: ignore[arg-type]
    return found.id if found else None


# -- precedence --------------------------------------------------------------------------------------------


def test_exact_host_beats_wildcard() -> None:
    m = matcher(sig("wild", "*.events.example.invalid"), sig("exact", "v10.events.example.invalid"))
    assert mid(m, "v10.events.example.invalid") == "exact"
    assert mid(m, "v20.events.example.invalid") == "wild"
    assert mid(m, "events.example.invalid") is None  # '*.' needs at least one label


def test_longer_literal_suffix_beats_shorter() -> None:
    m = matcher(sig("short", "*.example.invalid"), sig("long", "*.data.example.invalid"))
    assert mid(m, "a.data.example.invalid") == "long"
    assert mid(m, "a.other.example.invalid") == "short"


def test_more_literal_characters_win_within_the_same_suffix() -> None:
    m = matcher(sig("any", "*.events.example.invalid"), sig("wer", "*-umwatsonc.events.example.invalid"))
    assert mid(m, "eu-umwatsonc.events.example.invalid") == "wer"
    assert mid(m, "umwatsonc.events.example.invalid") == "any"


def test_label_globs_match_prefixes_and_middles() -> None:
    m = matcher(sig("prefix", "*smartscreen-prod.example.invalid"), sig("middle", "watson.*.example.invalid"))
    assert mid(m, "smartscreen-prod.example.invalid") == "prefix"
    assert mid(m, "eu.smartscreen-prod.example.invalid") == "prefix"
    assert mid(m, "watson.telemetry.example.invalid") == "middle"
    assert mid(m, "watson.a.b.example.invalid") == "middle"
    assert mid(m, "notwatson.telemetry.example.invalid") is None


def test_wildcard_beats_host_regex() -> None:
    m = matcher(sig("rx", host_regex=(r"[a-z]+\.example\.invalid",)), sig("wild", "*.example.invalid"))
    assert mid(m, "abc.example.invalid") == "wild"
    m = matcher(sig("rx", host_regex=(r"[a-z]+\.example\.invalid",)))
    assert mid(m, "abc.example.invalid") == "rx"
    assert mid(m, "x.abc.example.invalid") is None  # host_regex is anchored at both ends


def test_path_rules_after_host() -> None:
    m = matcher(sig("host", "c.example.invalid"),
                sig("collector", "c.example.invalid", path_prefix=("/OneCollector/1.0",)),
                sig("deep", "c.example.invalid", path_prefix=("/OneCollector/1.0/t.js",)))
    assert mid(m, "c.example.invalid", "/onecollector/1.0/?cors=true") == "collector"  # case-insensitive path
    assert mid(m, "c.example.invalid", "/OneCollector/1.0/t.js") == "deep"  # longer prefix wins
    assert mid(m, "c.example.invalid", "/other") == "host"
    # Seen by SNI only: no path. The signature without a path constraint is fully verified, so it wins.
    assert mid(m, "c.example.invalid") == "host"


def test_unknown_fields_do_not_exclude_a_signature() -> None:
    m = matcher(sig("collector", "c.example.invalid", path_prefix=("/OneCollector/",), methods=("POST",)))
    assert mid(m, "c.example.invalid") == "collector"  # a TLS failure: only the SNI is known
    assert mid(m, "c.example.invalid", "/OneCollector/1.0", "GET") is None  # known and different


def test_exact_host_outranks_a_path_match_on_a_wildcard() -> None:
    m = matcher(sig("generic", "*.events.example.invalid", path_prefix=("/OneCollector/",)),
                sig("windows", "v10.events.example.invalid"))
    assert mid(m, "v10.events.example.invalid", "/OneCollector/1.0/") == "windows"


def test_globs_and_regexes_on_paths() -> None:
    m = matcher(sig("glob", "c.example.invalid", path_glob=("/config/v1/*/1.0",)),
                sig("rx", "c.example.invalid", path_regex=(r"^/v2(\.1)?/track$",)))
    assert mid(m, "c.example.invalid", "/config/v1/Office/1.0?x=1") == "glob"
    assert mid(m, "c.example.invalid", "/v2.1/track") == "rx"
    assert mid(m, "c.example.invalid", "/v3/track") is None


def test_methods_ports_and_content_types() -> None:
    m = matcher(sig("post", "c.example.invalid", methods=("POST",), ports=(443,),
                    content_types=("application/*",)),
                sig("any", "c.example.invalid", priority=-1))
    assert mid(m, "c.example.invalid", "/", "post", 443, "application/x-json-stream; charset=utf-8") == "post"
    assert mid(m, "c.example.invalid", "/", "POST", 8443, "application/json") == "any"
    assert mid(m, "c.example.invalid", "/", "POST", 443, "text/plain") == "any"


def test_priority_breaks_ties_then_the_smaller_id() -> None:
    m = matcher(sig("b", "c.example.invalid"), sig("a", "c.example.invalid"))
    assert mid(m, "c.example.invalid") == "a"
    m = matcher(sig("b", "c.example.invalid"), sig("a", "c.example.invalid", priority=-10))
    assert mid(m, "c.example.invalid") == "b"


def test_host_normalisation_and_ip_literals() -> None:
    m = matcher(sig("h", "collector.example.invalid"), sig("v4", "192.0.2.10"), sig("v6", "2001:db8::1"),
                sig("idn", "bücher.example.invalid"))
    assert mid(m, "COLLECTOR.Example.Invalid.") == "h"
    assert mid(m, " collector.example.invalid ") == "h"
    assert mid(m, "192.0.2.10") == "v4"
    assert mid(m, "[2001:DB8:0:0::1]") == "v6"
    assert mid(m, "xn--bcher-kva.example.invalid") == "idn"
    assert mid(m, "BÜCHER.example.invalid") == "idn"
    assert mid(m, None) is None
    assert mid(m, "") is None


def test_parse_target() -> None:
    assert parse_target("POST https://h.example.invalid/OneCollector/1.0/?a=b") == (
        "h.example.invalid", "/OneCollector/1.0/?a=b", "POST", 443)
    assert parse_target("h.example.invalid") == ("h.example.invalid", None, None, None)
    assert parse_target("h.example.invalid:8080/x") == ("h.example.invalid", "/x", None, 8080)
    assert parse_target("http://[2001:db8::1]/") == ("2001:db8::1", "/", None, 80)


# -- properties --------------------------------------------------------------------------------------------

LABELS = ["a", "b", "ab", "c", "x1"]
label = st.sampled_from(LABELS)
hosts = st.lists(label, min_size=1, max_size=4).map(lambda ls: ".".join([*ls, "test", "invalid"]))


@st.composite
def patterns(draw: st.DrawFn) -> str:
    host = draw(hosts)
    labels = host.split(".")
    star_at = draw(st.integers(0, len(labels) - 3))  # keep two literal labels ("test.invalid") after the star
    form = draw(st.sampled_from(["exact", "whole", "prefix", "suffix"]))
    if form == "exact":
        return host
    lab = labels[star_at]
    labels[star_at] = {"whole": "*", "prefix": "*" + lab, "suffix": lab + "*"}[form]
    return ".".join(labels)


def reference(sigs: list[tuple[str, str, int]], host: str) -> str | None:
    """Brute force: fnmatch on every pattern, then the documented precedence."""
    best: tuple | None = None
    best_id = None
    for sid, pattern, priority in sigs:
        if "*" not in pattern:
            if pattern != host:
                continue
            rank: tuple = (3, 0, 0)
        else:
            # '*' matches any run of characters, dots included. Host labels are never empty, so a label that is
            # only '*' automatically stands for at least one character, as the format requires.
            if not fnmatch.fnmatchcase(host, pattern):
                continue
            labels = pattern.split(".")
            last_star = max(i for i, lab in enumerate(labels) if "*" in lab)
            rank = (2, len(labels) - last_star - 1, len(pattern.replace("*", "")))
        key = (rank, priority, [-ord(c) for c in sid])
        if best is None or key > best:
            best, best_id = key, sid
    return best_id


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(patterns(), st.integers(-1, 1)), min_size=1, max_size=25), st.lists(hosts, max_size=20))
def test_matcher_agrees_with_brute_force(entries: list[tuple[str, int]], probes: list[str]) -> None:
    sigs = [(f"s{i:02d}", p, prio) for i, (p, prio) in enumerate(entries)]
    assert all(not isinstance(parse_host_pattern(p), str) for _, p, _ in sigs)
    m = matcher(*(sig(sid, p, priority=prio) for sid, p, prio in sigs))
    probes = probes + [p.replace("*", "zz") for _, p, _ in sigs]
    for host in probes:
        assert mid(m, host) == reference(sigs, host), host


@settings(max_examples=200, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=10, unique=True), hosts)
def test_case_and_trailing_dot_do_not_matter(pats: list[str], host: str) -> None:
    m = matcher(*(sig(f"s{i}", p) for i, p in enumerate(pats)))
    assert mid(m, host.upper() + ".") == mid(m, host)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=40)), st.one_of(st.none(), st.text(max_size=8)),
       st.one_of(st.none(), st.integers(0, 70000)), st.one_of(st.none(), st.text(max_size=30)))
def test_arbitrary_input_never_raises(host: str, path: str | None, method: str | None, port: int | None,
                                      ctype: str | None) -> None:
    m = matcher(sig("a", "*.example.invalid", path_prefix=("/x",)), sig("b", host_regex=(r"[0-9]+\.invalid",)),
                sig("c", "a.example.invalid", methods=("POST",), content_types=("application/json",)))
    result = m.match(host, path, method, port, ctype)
    assert result is None or result.id in {"a", "b", "c"}


@settings(max_examples=100, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=30, unique=True))
def test_every_pattern_matches_its_own_example(pats: list[str]) -> None:
    m = matcher(*(sig(f"s{i:02d}", p) for i, p in enumerate(pats)))
    for p in pats:
        found = m.match(p.replace("*", "q"))
        assert found is not None  # the most specific pattern may be another one, but something matches
