"""What the configuration services tell clients: OneSettings and ECS *responses* as configuration events.

OneSettings: ``GET settings-win.data.microsoft.com/settings/v{2,3}.0/<namespace>/<feature>?…`` → one event
named ``<namespace>/<feature>``. ECS: ``GET ecs.office.com/config/v1/<Client>/<version>?agents=…`` → one event
per top-level key of the response (the agents), named ``<Client>/<agent>``. The request's query (device
attributes, targeting parameters that can include tenant ids) is kept with each event.
"""

from __future__ import annotations

from typing import Any

from .model import Event, Limits, str_or_none
from .onecollector import load_json

_TENANT_PARAMS = ("tenantid", "tenant", "tid", "tenant_id")


def is_onesettings(host: str, path: str) -> bool:
    return (host.startswith("settings") and host.endswith(".data.microsoft.com")) or (
        "settings-win" in host and path.startswith("/settings/")
    )


def is_ecs(host: str, path: str) -> bool:
    return (host.startswith("ecs.") or ".ecs." in host) and path.startswith("/config/")


def _tenant(query: dict[str, str]) -> str | None:
    for k, v in query.items():
        if k.lower() in _TENANT_PARAMS and v:
            return v
    return None


def _parse(body: bytes, limits: Limits) -> Any:
    return load_json(body, limits.max_depth, "configuration response is not JSON")


def decode_onesettings(path: str, query: dict[str, str], status: int | None, body: bytes, limits: Limits,
                       notes: list[str]) -> list[Event]:
    parts = [p for p in path.split("/") if p]
    # /settings/<version>/<namespace>/<feature>…
    version = parts[1] if len(parts) > 1 else None
    rest = parts[2:] if len(parts) > 2 else parts
    name = "/".join(rest) or None
    doc = _parse(body, limits) if body.strip() else None
    data = {"service": "OneSettings", "version": version, "path": path, "query": query, "status": status,
            "response": doc}
    notes.append(f"OneSettings response for {name}")
    return [Event("onesettings", 0, name=name, tenant_id=_tenant(query), data=data)]


def decode_ecs(path: str, query: dict[str, str], status: int | None, body: bytes, limits: Limits,
               notes: list[str]) -> list[Event]:
    parts = [p for p in path.split("/") if p]
    # /config/v1/<ClientName>/<version>
    client = parts[2] if len(parts) > 2 else None
    client_version = parts[3] if len(parts) > 3 else None
    doc = _parse(body, limits) if body.strip() else None
    tenant = _tenant(query)
    common = {"service": "ECS", "client": client, "clientVersion": client_version, "path": path,
              "query": query, "status": status}
    events: list[Event] = []
    if isinstance(doc, dict) and doc:
        for agent, cfg in doc.items():
            if len(events) >= limits.max_events:
                break
            events.append(Event("ecs", len(events), name=f"{client}/{agent}" if client else agent,
                                tenant_id=tenant, app_id=str_or_none(client), app_version=client_version,
                                data={**common, "agent": agent, "config": cfg}))
    else:
        events.append(Event("ecs", 0, name=client, tenant_id=tenant, app_id=str_or_none(client),
                            app_version=client_version, data={**common, "response": doc}))
    notes.append(f"ECS response for {client}, {len(events)} agent(s)")
    return events
