"""Legacy Aria Collector 3.0: one Bond Compact Binary v1 ``ClientToCollectorRequest`` per body.

Each ``Record`` in each ``DataPackage`` becomes an event; the package fields (minus its records) are kept
under ``_package`` and the tenant token it was filed under under ``_tenantToken``.
"""

from __future__ import annotations

from typing import Any

from .bond import BondError, Reader, Schema
from .model import DecodeError, Event, Limits, TooManyEvents, iso_from_unix_ms, str_or_none
from .onecollector import CC_KINDS, PII_KINDS, _collector_info, _kind_name

PII_SCHEMA: Schema = {1: ("ScrubType", None), 2: ("Kind", None), 3: ("RawContent", None)}
CC_SCHEMA: Schema = {1: ("Kind", None), 2: ("RawContent", None)}
RECORD_SCHEMA: Schema = {
    1: ("Id", None), 3: ("Timestamp", None), 4: ("ConfigurationIds", None), 5: ("Type", None),
    6: ("EventType", None), 13: ("Extension", None), 19: ("ContextIds", None), 24: ("RecordType", None),
    30: ("PIIExtensions", PII_SCHEMA), 31: ("TypedExtensionBoolean", None),
    32: ("TypedExtensionDateTime", None), 33: ("TypedExtensionInt64", None),
    34: ("TypedExtensionDouble", None), 36: ("CustomerContentExtensions", CC_SCHEMA),
}
PACKAGE_SCHEMA: Schema = {
    1: ("Type", None), 2: ("Source", None), 3: ("Version", None), 4: ("Ids", None), 5: ("DataPackageId", None),
    6: ("Timestamp", None), 7: ("SchemaVersion", None), 8: ("Records", RECORD_SCHEMA),
}
REQUEST_SCHEMA: Schema = {
    1: ("DataPackages", PACKAGE_SCHEMA), 2: ("RequestRetryCount", None),
    3: ("TokenToDataPackagesMap", PACKAGE_SCHEMA),
}


def _ext(rec: dict, *keys: str) -> str | None:
    ext = rec.get("Extension")
    if isinstance(ext, dict):
        for k in keys:
            v = ext.get(k)
            if v:
                return str_or_none(v)
    return None


def _items(d: Any) -> Any:
    return d.items() if isinstance(d, dict) else ()


def _record_event(rec: Any, pos: int, token: str | None, pkg: dict, params: dict[str, str],
                  info: dict | None) -> Event:
    if not isinstance(rec, dict):
        return Event("aria", pos, data={"value": rec})
    pii: list[dict] = []
    for key, p in _items(rec.get("PIIExtensions")):
        kind = p.get("Kind", 0) if isinstance(p, dict) else 0
        pii.append({"path": f"PIIExtensions.{key}", "kind": _kind_name(PII_KINDS, kind), "source": "aria-pii-kind"})
    for key, c in _items(rec.get("CustomerContentExtensions")):
        kind = c.get("Kind", 0) if isinstance(c, dict) else 0
        pii.append({"path": f"CustomerContentExtensions.{key}", "kind": "CustomerContent",
                    "detail": _kind_name(CC_KINDS, kind), "source": "aria-customer-content"})
    data = dict(rec)
    ts = rec.get("Timestamp")
    time = iso_from_unix_ms(ts)
    if time:
        data["_time"] = time
    data["_package"] = pkg
    if token is not None:
        data["_tenantToken"] = token
    if info:
        data["_collector"] = info
    api = params.get("apikey")
    return Event(
        "aria", pos,
        name=str_or_none(rec.get("EventType")) or _ext(rec, "EventInfo.Name"),
        time=time,
        ikey=token or (api.split(",")[0] if api else None),
        tenant_id=_ext(rec, "UserInfo.OMSTenantId", "TenantId", "Tenant.Id"),
        sdk_version=_ext(rec, "EventInfo.SdkVersion") or params.get("sdk-version"),
        app_id=_ext(rec, "AppInfo.Id", "AppInfo.Name"),
        app_version=_ext(rec, "AppInfo.Version"),
        os_name=_ext(rec, "DeviceInfo.OsName"),
        os_version=_ext(rec, "DeviceInfo.OsVersion", "DeviceInfo.OsBuild"),
        device_id=_ext(rec, "DeviceInfo.Id", "DeviceInfo.SDKUid"),
        user_id=_ext(rec, "UserInfo.Id"),
        data=data, pii=pii,
    )


def decode_aria(body: bytes, params: dict[str, str], limits: Limits, notes: list[str]
                ) -> tuple[list[Event], DecodeError | None]:
    reader = Reader(body, version=1, max_depth=limits.max_depth)
    try:
        req, end = reader.read(0, REQUEST_SCHEMA)
    except BondError as e:
        return [], e
    error: DecodeError | None = None
    if end != len(body):
        error = DecodeError(f"{len(body) - end} bytes after the ClientToCollectorRequest", end)
    info = _collector_info(params) if params else None
    events: list[Event] = []
    groups: list[tuple[str | None, Any]] = [(None, req.get("DataPackages") or [])]
    tmap = req.get("TokenToDataPackagesMap")
    if isinstance(tmap, dict):
        groups += list(tmap.items())
    for token, pkgs in groups:
        for pkg in pkgs if isinstance(pkgs, list) else ():
            if not isinstance(pkg, dict):
                continue
            meta = {k: v for k, v in pkg.items() if k != "Records"}
            if "Timestamp" in meta and iso_from_unix_ms(meta["Timestamp"]):
                meta["_time"] = iso_from_unix_ms(meta["Timestamp"])
            recs = pkg.get("Records")
            for rec in recs if isinstance(recs, list) else ():
                if len(events) >= limits.max_events:
                    return events, TooManyEvents(f"more than {limits.max_events} records", None)
                events.append(_record_event(rec, len(events), token, meta, params, info))
    extra = {k: v for k, v in req.items() if k not in ("DataPackages", "TokenToDataPackagesMap")}
    if extra:
        for ev in events:
            ev.data["_request"] = extra
    notes.append(f"Aria ClientToCollectorRequest, {len(events)} record{'s' * (len(events) != 1)}")
    return events, error
