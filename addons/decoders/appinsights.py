"""Application Insights "Breeze" envelopes: ``/v2/track`` (JSON array) and ``/v2.1/track`` (NDJSON)."""

from __future__ import annotations

from typing import Any

from .model import DecodeError, Event, Limits, TooManyEvents, normalise_iso, str_or_none
from .onecollector import decode_json_lines, load_json


def _tag(tags: Any, *keys: str) -> str | None:
    if isinstance(tags, dict):
        for k in keys:
            v = tags.get(k)
            if v not in (None, ""):
                return str_or_none(v)
    return None


def envelope_event(env: Any, position: int) -> Event:
    if not isinstance(env, dict):
        return Event("appinsights", position, data={"value": env})
    tags = env.get("tags")
    base = env.get("data")
    base_data = base.get("baseData") if isinstance(base, dict) else None
    name = base_data.get("name") if isinstance(base_data, dict) else None
    if not isinstance(name, str):
        name = env.get("name") if isinstance(env.get("name"), str) else None
    return Event(
        "appinsights", position,
        name=name,
        time=normalise_iso(env.get("time")),
        ikey=str_or_none(env.get("iKey") or env.get("iKey".lower())),
        tenant_id=None,
        sdk_version=_tag(tags, "ai.internal.sdkVersion"),
        app_id=_tag(tags, "ai.cloud.role", "ai.application.id"),
        app_version=_tag(tags, "ai.application.ver"),
        os_name=_tag(tags, "ai.device.os"),
        os_version=_tag(tags, "ai.device.osVersion"),
        device_id=_tag(tags, "ai.device.id"),
        user_id=_tag(tags, "ai.user.authUserId", "ai.user.id"),
        data=env,
    )


def decode_appinsights(body: bytes, limits: Limits, notes: list[str]) -> tuple[list[Event], DecodeError | None]:
    text = body.lstrip()
    if text[:1] == b"[" or (text[:1] == b"{" and b"\n" not in text.strip()):
        # Browser SDK: one JSON array (or a lone envelope).
        try:
            # +1: the batch array itself is not part of an envelope's nesting.
            doc = load_json(text, limits.max_depth + 1)
        except DecodeError as e:
            if e.offset:
                e.offset += len(body) - len(text)
            return [], e
        items = doc if isinstance(doc, list) else [doc]
        error: DecodeError | None = None
        if len(items) > limits.max_events:
            items = items[: limits.max_events]
            error = TooManyEvents(f"more than {limits.max_events} envelopes", None)
        events = [envelope_event(x, i) for i, x in enumerate(items)]
        notes.append(f"Application Insights JSON array, {len(events)} envelope{'s' * (len(events) != 1)}")
        return events, error
    events, error = decode_json_lines(body, {}, limits, notes, "appinsights", envelope_event)
    notes[-1] = f"Application Insights NDJSON, {len(events)} envelope{'s' * (len(events) != 1)}"
    return events, error
