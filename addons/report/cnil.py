"""The report as a PIA file the CNIL's PIA tool (LINCnil/pia) imports.

Shape (LINCnil/pia 44dd313, ``PiaService.importData`` and the models in ``src/app/models``):
``{"pia": {...}, "answers": [...], "measures": [...], "evaluations": [...], "comments": [...]}``.
Answers address the tool's questions by number (``reference_to``, see ``pia_architecture.json``):
text questions carry HTML in ``data.text``, list questions strings in ``data.list``, gauge questions a
0–4 ``data.gauge`` (0 = not rated). teletap prefills what network evidence can support and leaves
judgements (gauges, evaluations, opinions, validation) to the people who sign the PIA.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jinja2

from .model import Report

# Question numbers of the PIA tool, by answer type (pia_architecture.json, LINCnil/pia 44dd313).
TEXT_QUESTIONS = (111, 112, 113, 121, 122, 123, 211, 212, 213, 214, 215, 221, 222, 223, 224, 225, 226, 227)
LIST_QUESTIONS = (321, 322, 323, 324, 331, 332, 333, 334, 341, 342, 343, 344)
GAUGE_QUESTIONS = (325, 326, 335, 336, 345, 346)
# What teletap answers: the macro of the same name (q111, …) in reports/cnil-pia.html.j2 writes the text.
ANSWERED_TEXT = (111, 121, 122, 123, 213, 215, 226, 227)
ANSWERED_GAUGE = (325, 326)
MEASURE_PLACEHOLDER = "measures.default_placeholder"

# Impacts on data subjects (question 321) suggested by the kinds of personal data found.
KIND_IMPACTS: dict[str, str] = {
    "email": "Identification of users from contact details sent to the recipients",
    "upn": "Identification of users from contact details sent to the recipients",
    "phone": "Identification of users from contact details sent to the recipients",
    "known-email": "Identification of users from contact details sent to the recipients",
    "known-upn": "Identification of users from contact details sent to the recipients",
    "known-name": "Identification of users from contact details sent to the recipients",
    "known-phone": "Identification of users from contact details sent to the recipients",
    "guid": "Tracking of users and devices across sessions through persistent identifiers",
    "sid": "Tracking of users and devices across sessions through persistent identifiers",
    "mac": "Tracking of users and devices across sessions through persistent identifiers",
    "hostname": "Tracking of users and devices across sessions through persistent identifiers",
    "known-device": "Tracking of users and devices across sessions through persistent identifiers",
    "known-username": "Tracking of users and devices across sessions through persistent identifiers",
    "ipv4-public": "Location of users from network addresses",
    "ipv6-public": "Location of users from network addresses",
    "known-ip": "Location of users from network addresses",
    "geo": "Location of users from geographic data",
    "document": "Disclosure of document names, paths or content",
    "user-path": "Disclosure of document names, paths or content",
    "sharepoint-url": "Disclosure of document names, paths or content",
    "customer-content": "Disclosure of document names, paths or content",
    "iban": "Financial harm from disclosed account or card numbers",
    "payment-card": "Financial harm from disclosed account or card numbers",
    "bsn": "Identity fraud from disclosed national identification numbers",
    "ssn": "Identity fraud from disclosed national identification numbers",
    "canary": "Disclosure of data the organisation planted as a test (proof that such data leaves)",
}
GENERIC_IMPACT = "Profiling of users from the personal data sent to vendors and third parties"


def _html(markup: Any) -> str:
    """Template output as compact HTML: whitespace between tags collapsed, stable bytes."""
    text = re.sub(r">\s+<", "><", str(markup).strip())
    return re.sub(r"\s+", " ", text)


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(item, None)
    return list(seen)


def build_pia(report: Report, env: jinja2.Environment) -> dict[str, Any]:
    module = env.get_template("cnil-pia.html.j2").make_module({"report": report})
    stamp = report.generated_at
    labels = [label for label in report.section("scope").facts["labels"] if label]
    name = report.title + (f": {'; '.join(labels)}" if labels else "")

    answers: list[dict[str, Any]] = []

    def answer(reference: int, *, text: str | None = None, gauge: int | None = None,
               items: list[str] | None = None) -> None:
        answers.append({"pia_id": 1, "reference_to": reference,
                        "data": {"text": text, "gauge": gauge, "list": items or []},
                        "created_at": stamp, "updated_at": stamp, "id": len(answers) + 1})

    for ref in ANSWERED_TEXT:
        answer(ref, text=_html(getattr(module, f"q{ref}")()), gauge=0)

    risks = report.table("risk-register").records()
    findings = report.table("findings-by-kind").records()
    measures = report.table("measures").records()
    impacts = _unique([KIND_IMPACTS.get(str(f["kind"]), GENERIC_IMPACT) for f in findings])
    threats = _unique([str(r["risk"]) for r in risks])
    sources = _unique([f"{r['vendor']} ({r['data_flow']})" if r["data_flow"] else "Operators of undocumented endpoints"
                       for r in report.table("flows-by-vendor").records()])
    controls = _unique([str(m["control"]) for m in measures])
    if impacts or threats:
        answer(321, items=impacts)
        answer(322, items=threats)
        answer(323, items=sources)
        answer(324, items=controls)
        for ref in ANSWERED_GAUGE:
            answer(ref, text=_html(getattr(module, f"q{ref}")()), gauge=0)

    measure_rows = []
    for m in measures:
        measure_rows.append({"pia_id": 1, "title": str(m["control"]),
                             "content": _html(module.measure(m)), "placeholder": MEASURE_PLACEHOLDER,
                             "created_at": stamp, "updated_at": stamp, "id": len(measure_rows) + 1})
    no_control = report.table("no-control").records()
    undocumented = report.table("undocumented-hosts").records()
    if no_control or undocumented:
        measure_rows.append({"pia_id": 1, "title": "Block endpoints that no documented control switches off",
                             "content": _html(module.blocking_measure(no_control, undocumented)),
                             "placeholder": MEASURE_PLACEHOLDER, "created_at": stamp, "updated_at": stamp,
                             "id": len(measure_rows) + 1})

    pia = {
        "id": 1, "name": name, "category": "", "status": 0, "progress": 0, "is_example": 0, "is_archive": 0,
        "author_name": "", "evaluator_name": "", "validator_name": "",
        "dpo_status": None, "dpo_opinion": "", "dpos_names": "",
        "concerned_people_opinion": "", "concerned_people_status": None,
        "concerned_people_searched_opinion": False, "concerned_people_searched_content": "", "people_names": "",
        "rejection_reason": "", "applied_adjustments": "", "created_at": stamp, "updated_at": stamp,
    }
    return {"pia": pia, "answers": answers, "measures": measure_rows, "evaluations": [], "comments": []}


def render_cnil_pia(report: Report, env: jinja2.Environment) -> str:
    return json.dumps(build_pia(report, env), indent=2, ensure_ascii=False) + "\n"
