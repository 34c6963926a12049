"""Application Insights, Aria, OneSettings/ECS, generic formats, JWTs and dispatch."""

from __future__ import annotations

import base64
import gzip
import json
import time
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from teletap.decoders import decode_request, decode_response
from teletap.decoders.generic import may_hold_jwt
from tests.bond_encoder import INT32, INT64, LIST, MAP, STRING, STRUCT, F, L, M, S, encode

# --- Application Insights ----------------------------------------------------------------------------

IKEY = "00000000-0000-4000-8000-00000000000a"


def envelope(i: int) -> dict:
    return {
        "ver": 1, "name": f"Microsoft.ApplicationInsights.{IKEY.replace('-', '')}.Event",
        "time": "2026-11-25T12:00:00.5Z", "iKey": IKEY,
        "tags": {"ai.internal.sdkVersion": "javascript:3.3.0", "ai.device.id": "browser", "ai.user.id": "u1",
                 "ai.device.os": "Windows", "ai.device.osVersion": "10", "ai.application.ver": "1.2.3",
                 "ai.cloud.role": "web"},
        "data": {"baseType": "EventData", "baseData": {"ver": 2, "name": f"Clicked{i}",
                                                        "properties": {"x": "y"}}},
    }


def test_appinsights_v2_json_array() -> None:
    body = json.dumps([envelope(0), envelope(1)]).encode()
    r = decode_request("POST", "https://dc.services.visualstudio.com/v2/track",
                       [("Content-Type", "application/json")], body)
    assert r.format == "appinsights" and r.error is None
    ev = r.events[1]
    assert (ev.name, ev.position, ev.ikey) == ("Clicked1", 1, IKEY)
    assert ev.time == "2026-11-25T12:00:00.500000Z"
    assert (ev.sdk_version, ev.app_id, ev.app_version) == ("javascript:3.3.0", "web", "1.2.3")
    assert (ev.os_name, ev.os_version, ev.device_id, ev.user_id) == ("Windows", "10", "browser", "u1")
    assert ev.data["data"]["baseData"]["properties"] == {"x": "y"}


def test_appinsights_v21_gzip_ndjson() -> None:
    body = gzip.compress(b"\n".join(json.dumps(envelope(i)).encode() for i in range(3)))
    r = decode_request("POST", "https://westeurope-5.in.applicationinsights.azure.com/v2.1/track",
                       [("Content-Type", "application/x-json-stream"), ("Content-Encoding", "gzip")], body)
    assert r.format == "appinsights" and r.error is None
    assert [e.name for e in r.events] == ["Clicked0", "Clicked1", "Clicked2"]
    assert any("NDJSON, 3 envelopes" in n for n in r.notes)


def test_appinsights_envelope_without_base_name() -> None:
    env = envelope(0)
    del env["data"]["baseData"]["name"]
    r = decode_request("POST", "https://dc.services.visualstudio.com/v2/track", [], json.dumps([env]).encode())
    assert r.events[0].name == env["name"]


# --- Aria ----------------------------------------------------------------------------------------------

ARIA_URL = ("https://browser.pipe.aria.microsoft.com/Collector/3.0/?qsp=true"
            "&content-type=application%2Fbond-compact-binary&client-id=NO_AUTH&sdk-version=ACT-Web-JS-2.8.0"
            "&x-apikey=ariatoken-1234&client-time-epoch-millis=1764072000000")


def aria_body() -> bytes:
    rec = S([
        F(1, STRING, "rec-0001"), F(3, INT64, 1_764_072_000_123), F(5, STRING, "custom"),
        F(6, STRING, "office_word_fileopen"),
        F(13, MAP, M(STRING, STRING, [("AppInfo.Id", "Word"), ("AppInfo.Version", "16.0"),
                                      ("DeviceInfo.OsName", "Windows"), ("DeviceInfo.OsVersion", "10.0"),
                                      ("DeviceInfo.Id", "d:1"), ("UserInfo.Id", "u:1")])),
        F(30, MAP, M(STRING, STRUCT, [("UserEmail", S([F(1, INT32, 1), F(2, INT32, 9),
                                                       F(3, STRING, "someone@example.invalid")]))])),
        F(33, MAP, M(STRING, INT64, [("Duration", 42)])),
        F(36, MAP, M(STRING, STRUCT, [("Subject", S([F(1, INT32, 1), F(2, STRING, "Quarterly plan")]))])),
    ])
    pkg = S([F(1, STRING, "Client"), F(2, STRING, "act_default_source"), F(5, STRING, "pkg-guid"),
             F(6, INT64, 1_764_072_000_000), F(8, LIST, L(STRUCT, [rec, rec]))])
    return encode([F(3, MAP, M(STRING, LIST, [("ariatoken-1234", L(STRUCT, [pkg]))]))])


def test_aria_binary() -> None:
    r = decode_request("POST", ARIA_URL, [("Content-Type", "text/plain")], aria_body())
    assert r.format == "aria" and r.error is None, r.error
    aria = [e for e in r.events if e.format == "aria"]
    assert len(aria) == 2
    ev = aria[0]
    assert ev.name == "office_word_fileopen" and ev.time == "2025-11-25T12:00:00.123000Z"
    assert ev.ikey == "ariatoken-1234"
    assert (ev.app_id, ev.app_version, ev.os_name, ev.os_version) == ("Word", "16.0", "Windows", "10.0")
    assert (ev.device_id, ev.user_id) == ("d:1", "u:1")
    assert ev.sdk_version == "ACT-Web-JS-2.8.0"
    assert ev.data["PIIExtensions"]["UserEmail"]["RawContent"] == "someone@example.invalid"
    assert {"path": "PIIExtensions.UserEmail", "kind": "SmtpAddress", "source": "aria-pii-kind"} in ev.pii
    assert any(p["kind"] == "CustomerContent" and p["path"] == "CustomerContentExtensions.Subject" for p in ev.pii)
    assert ev.data["_package"]["Source"] == "act_default_source"
    assert ev.data["TypedExtensionInt64"] == {"Duration": 42}


def test_aria_base64_and_raw_deflate() -> None:
    b64_url = ARIA_URL + "&content-encoding=base64"
    r = decode_request("POST", b64_url, [], base64.b64encode(aria_body()))
    assert r.format == "aria" and r.error is None and len([e for e in r.events if e.format == "aria"]) == 2
    c = zlib.compressobj(wbits=-15)
    deflated = c.compress(aria_body()) + c.flush()
    r2 = decode_request("POST", "https://office.pipe.aria.microsoft.com/Collector/3.0/",
                        [("Content-Type", "application/bond-compact-binary"), ("Content-Encoding", "deflate"),
                         ("X-APIKey", "ariatoken-1234")], deflated)
    assert r2.format == "aria" and r2.error is None and len(r2.events) == 2


def test_aria_raw_deflate_named_in_query() -> None:
    c = zlib.compressobj(wbits=-15)
    deflated = c.compress(aria_body()) + c.flush()
    r = decode_request("POST", ARIA_URL + "&content-encoding=deflate", [], deflated)
    assert r.format == "aria" and r.error is None and r.body == aria_body()
    assert any("from the query string" in n for n in r.notes)


def test_aria_trailing_bytes_reported() -> None:
    r = decode_request("POST", ARIA_URL, [], aria_body() + b"\x01\x02")
    assert r.error and "after the ClientToCollectorRequest" in r.error and r.error_offset == len(aria_body())


# --- configuration responses ---------------------------------------------------------------------------


def test_onesettings_response() -> None:
    url = ("https://settings-win.data.microsoft.com/settings/v3.0/WaaS/FeatureManagement"
           "?os=windows&osVer=10.0.22631&deviceId=s:0000&TenantId=00000000-0000-4000-8000-0000000000aa")
    body = gzip.compress(json.dumps({"settings": {"DisableTelemetry": "0", "Sampling": "100"}}).encode())
    r = decode_response("GET", url, 200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")], body)
    assert r.format == "onesettings" and r.error is None
    ev = r.events[0]
    assert ev.format == "onesettings" and ev.name == "WaaS/FeatureManagement"
    assert ev.tenant_id == "00000000-0000-4000-8000-0000000000aa"
    assert ev.data["response"]["settings"]["Sampling"] == "100"
    assert ev.data["query"]["osVer"] == "10.0.22631" and ev.data["status"] == 200


def test_ecs_response_one_event_per_agent() -> None:
    url = ("https://ecs.office.com/config/v1/OneDriveSharePoint/1.0.0.0?agents=OneDrive,SharePoint"
           "&TenantID=00000000-0000-4000-8000-0000000000bb")
    body = json.dumps({"OneDrive": {"FeatureX": True}, "SharePoint": {"Y": 1}, "ECS": {"etag": "x"}}).encode()
    r = decode_response("GET", url, 200, [], body)
    assert r.format == "ecs"
    assert [e.name for e in r.events] == ["OneDriveSharePoint/OneDrive", "OneDriveSharePoint/SharePoint",
                                          "OneDriveSharePoint/ECS"]
    assert r.events[0].data["config"] == {"FeatureX": True}
    assert r.events[0].tenant_id == "00000000-0000-4000-8000-0000000000bb"
    assert r.events[0].app_id == "OneDriveSharePoint"


def test_config_response_not_json() -> None:
    r = decode_response("GET", "https://ecs.office.com/config/v1/X/1.0", 200, [], b"<html>")
    assert r.error and r.error_offset == 0 and r.events == []


def test_config_error_page_is_not_configuration() -> None:
    r = decode_response("GET", "https://ecs.office.com/config/v1/X/1.0", 503, [], b"<html>busy</html>")
    assert r.error is None and r.events == [] and r.format == "ecs" and r.body == b"<html>busy</html>"
    assert any("status 503" in n for n in r.notes)


def test_other_responses_return_quickly_with_body() -> None:
    r = decode_response("GET", "https://example.invalid/a.js", 200, [("Content-Type", "text/javascript")], b"x()")
    assert r.events == [] and r.body == b"x()" and r.format is None
    z = gzip.compress(b"hello")
    assert decode_response("GET", "https://example.invalid/", 200, [("Content-Encoding", "gzip")], z).body == b"hello"


# --- generic -----------------------------------------------------------------------------------------


def test_generic_json_object_and_array() -> None:
    r = decode_request("POST", "https://api.example.invalid/v1/log", [("Content-Type", "application/json")],
                       b'{"event":"login","user":"u@example.invalid"}')
    assert r.format == "json" and r.events[0].name == "login"
    r = decode_request("POST", "https://api.example.invalid/v1/log", [], b'[{"name":"a"},{"name":"b"}]')
    assert [e.name for e in r.events] == ["a", "b"]
    r = decode_request("POST", "https://api.example.invalid/v1/log", [], b"[1, 2]")
    assert r.events[0].data == {"value": [1, 2]}


def test_generic_ndjson_without_label() -> None:
    r = decode_request("POST", "https://api.example.invalid/", [], b'{"name":"a"}\n{"name":"b"}\n')
    assert r.format == "json" and [e.name for e in r.events] == ["a", "b"]


def test_form_urlencoded() -> None:
    r = decode_request("POST", "https://login.example.invalid/",
                       [("Content-Type", "application/x-www-form-urlencoded")],
                       b"client_id=app&scope=a+b&x=1&x=2&tenant=contoso.example.invalid")
    assert r.format == "form"
    f = r.events[0].data["fields"]
    assert f == {"client_id": "app", "scope": "a b", "x": ["1", "2"], "tenant": "contoso.example.invalid"}
    assert r.events[0].tenant_id == "contoso.example.invalid"


def test_multipart_names_and_sizes_not_file_content() -> None:
    boundary = "----teletapBoundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dump.dmp\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    body += b"SECRET" * 100 + f"\r\n--{boundary}--\r\n".encode()
    ct = f"multipart/form-data; boundary={boundary}"
    r = decode_request("POST", "https://upload.example.invalid/", [("Content-Type", ct)], body)
    assert r.format == "multipart" and r.error is None
    parts = r.events[0].data["parts"]
    assert parts[0] == {"name": "comment", "size": 5, "value": "hello"}
    assert parts[1] == {"name": "file", "size": 600, "filename": "dump.dmp", "content_type": "application/octet-stream"}
    assert "SECRET" not in json.dumps(r.events[0].data)


def test_multipart_broken() -> None:
    r = decode_request("POST", "https://upload.example.invalid/",
                       [("Content-Type", "multipart/form-data; boundary=zz")],
                       b"--zz\r\nContent-Disposition: form-data; name=a\r\n\r\nno end")
    assert r.error and "not terminated" in r.error


def test_query_string_event() -> None:
    url = "https://ecs.office.com/config/v1/LokiService/1.0.0.0?agents=MicrosoftSearch&TenantID=t-1&a=1&a=2"
    r = decode_request("GET", url, [], b"")
    assert r.format == "query"
    ev = r.events[0]
    assert ev.data["params"] == {"agents": "MicrosoftSearch", "TenantID": "t-1", "a": ["1", "2"]}
    assert ev.tenant_id == "t-1" and ev.position == 0


def pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_field(num: int, wire: int, payload: bytes) -> bytes:
    return pb_varint(num << 3 | wire) + payload


def test_protobuf_field_tree() -> None:
    inner = pb_field(1, 2, pb_varint(5) + b"hello") + pb_field(2, 0, pb_varint(300))
    msg = (pb_field(1, 0, pb_varint(150)) + pb_field(2, 2, pb_varint(len(inner)) + inner)
           + pb_field(3, 5, b"\x01\x00\x00\x00") + pb_field(4, 1, b"\x02" + b"\x00" * 7)
           + pb_field(5, 0, pb_varint(1)) + pb_field(5, 0, pb_varint(2)) + pb_field(6, 2, b"\x02\xff\xfe"))
    r = decode_request("POST", "https://api.example.invalid/", [("Content-Type", "application/x-protobuf")], msg)
    assert r.format == "protobuf" and r.error is None
    assert r.events[0].data["fields"] == {
        "1": 150, "2": {"1": "hello", "2": 300}, "3": {"fixed32": 1}, "4": {"fixed64": 2}, "5": [1, 2],
        "6": {"$bytes_b64": base64.b64encode(b"\xff\xfe").decode()},
    }


def test_grpc_frames() -> None:
    m1 = pb_field(1, 0, pb_varint(7))
    m2 = pb_field(1, 2, pb_varint(2) + b"ok")
    body = b"\x00" + len(m1).to_bytes(4, "big") + m1 + b"\x00" + len(m2).to_bytes(4, "big") + m2
    r = decode_request("POST", "https://api.example.invalid/svc/Method", [("Content-Type", "application/grpc")], body)
    assert [e.data["fields"] for e in r.events] == [{"1": 7}, {"1": "ok"}]


def test_protobuf_garbage() -> None:
    r = decode_request("POST", "https://api.example.invalid/", [("Content-Type", "application/x-protobuf")],
                       b"\x07\x07\x07")
    assert r.error and "not a protobuf" in r.error


def jwt(claims: dict) -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


CLAIMS = {"tid": "00000000-0000-4000-8000-0000000000cc", "upn": "someone@example.invalid",
          "appid": "00000000-0000-4000-8000-0000000000dd", "oid": "00000000-0000-4000-8000-0000000000ee",
          "iat": 1764072000, "exp": 1764075600, "ipaddr": "192.0.2.1"}


def test_jwt_in_authorization_header_on_plain_get() -> None:
    r = decode_request("GET", "https://graph.example.invalid/me", [("Authorization", f"Bearer {jwt(CLAIMS)}")], b"")
    assert r.format == "jwt" and len(r.events) == 1
    ev = r.events[0]
    assert ev.tenant_id == CLAIMS["tid"] and ev.user_id == CLAIMS["upn"] and ev.app_id == CLAIMS["appid"]
    assert ev.time == "2025-11-25T12:00:00.000000Z" and ev.data["expires"] == "2025-11-25T13:00:00.000000Z"
    assert ev.data["source"] == "header:authorization" and ev.data["claims"]["oid"] == CLAIMS["oid"]
    assert "c2lnbmF0dXJl" not in json.dumps(ev.data)  # the signature is not kept
    assert {"path": "claims.upn", "kind": "Identity", "source": "jwt-claim"} in ev.pii
    assert {"path": "claims.ipaddr", "kind": "IPAddress", "source": "jwt-claim"} in ev.pii


def test_jwt_in_body_after_body_events_and_query() -> None:
    body = json.dumps({"name": "token", "access_token": jwt(CLAIMS)}).encode()
    r = decode_request("POST", "https://login.example.invalid/token?x=1", [("Content-Type", "application/json")], body)
    assert [e.format for e in r.events] == ["json", "query", "jwt"]
    assert [e.position for e in r.events] == [0, 1, 2]
    assert r.events[2].data["source"] == "body"


def test_jwt_in_query_string() -> None:
    r = decode_request("GET", f"https://app.example.invalid/cb?state=1&id_token={jwt(CLAIMS)}", [], b"")
    assert [e.format for e in r.events] == ["query", "jwt"]
    assert r.events[1].data["source"] == "query" and r.events[1].tenant_id == CLAIMS["tid"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="eyJx\u00e9", max_size=40) | st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b"J")))
def test_jwt_prefilter_agrees_with_a_plain_search(data: str | bytes) -> None:
    needle = "eyJ" if isinstance(data, str) else b"eyJ"
    assert may_hold_jwt(data) == (needle in data)  # type: ignore[operator]


def test_not_a_jwt() -> None:
    r = decode_request("GET", "https://x.example.invalid/", [("X-Token", "eyJhbGciOi.eyJzdWIi.garbage")], b"")
    assert r.events == [] and r.error is None


# --- dispatch and the fast path --------------------------------------------------------------------------


def test_plain_get_is_cheap_and_empty() -> None:
    hdrs = [("Host", "www.example.invalid"), ("User-Agent", "Mozilla/5.0"), ("Accept", "*/*"),
            ("Accept-Encoding", "gzip, deflate, br"), ("Cookie", "a=b")]
    r = decode_request("GET", "https://www.example.invalid/index.html", hdrs, b"")
    assert r.events == [] and r.format is None and r.error is None and r.body is None
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        decode_request("GET", "https://www.example.invalid/index.html", hdrs, b"")
    per_call = (time.perf_counter() - start) / n
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per plain GET"


def test_unknown_binary_is_not_guessed() -> None:
    r = decode_request("POST", "https://x.example.invalid/upload", [("Content-Type", "application/octet-stream")],
                       bytes(range(256)))
    assert r.format is None and r.events == [] and r.error is None and r.body == bytes(range(256))


def test_bond_sniffed_on_unknown_host() -> None:
    from tests.bond_encoder import record
    r = decode_request("POST", "https://telemetry.example.invalid/collect", [], encode(record(name="Sniffed")))
    assert r.format == "1ds-bond" and r.events[0].name == "Sniffed"


def test_never_raises_on_odd_arguments() -> None:
    for args in [("POST", "::not a url::", [], b"{"), ("POST", "http://[::1", [("Content-Type", "x")], b"\x00"),
                 ("POST", "https://h/OneCollector/1.0/", [("content-type", "application/bond-compact-binary")],
                  b"\x29")]:
        r = decode_request(*args)
        assert r is not None
