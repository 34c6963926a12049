"""The one definition of teletap's database: tables, columns and what they mean.

DDL, migrations and the column descriptions in ``datasette_metadata.json`` all derive from this module,
so the words an auditor reads in Datasette are the words the code was written against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA_VERSION = 4

ANALYSIS_DEFERRED = "deferred"  # flows.analysis of a flow stored before it was decoded and scanned


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # SQLite type affinity, optionally with constraints ("INTEGER PRIMARY KEY")
    description: str


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[tuple[str, str, str], ...] = ()  # (column, other table, other column)
    indexes: tuple[tuple[str, ...], ...] = ()
    # Summaries: PRIMARY KEY of a WITHOUT ROWID table, so rows are stored in key order. The order is chosen
    # so the main query's GROUP BY reads the table in order, without a sort.
    key: tuple[str, ...] = ()
    label_column: str | None = None
    extra_sql: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def count_column(self) -> str:
        """A summary's count: its first column outside the key. A row whose count drops to 0 is deleted."""
        return next(c for c in self.column_names if c not in self.key)

    def create_sql(self) -> list[str]:
        parts = [f"[{c.name}] {c.type}" for c in self.columns]
        parts += [f"FOREIGN KEY ([{col}]) REFERENCES [{other}]([{other_col}])"
                  for col, other, other_col in self.foreign_keys]
        if self.key:
            parts.append(f"PRIMARY KEY ({', '.join(f'[{c}]' for c in self.key)})")
        statements = [f"CREATE TABLE IF NOT EXISTS [{self.name}] (\n  " + ",\n  ".join(parts) + "\n)"
                      + (" WITHOUT ROWID" if self.key else "")]
        if self.key:
            # Summaries delete the rows a replacement empties: this partial index finds them without a scan.
            statements.append(f"CREATE INDEX IF NOT EXISTS [idx_{self.name}_emptied] ON [{self.name}] "
                              f"([{self.count_column}]) WHERE [{self.count_column}] <= 0")
        statements += [self.index_sql(cols) for cols in self.indexes]
        return statements + list(self.extra_sql)

    def index_sql(self, cols: tuple[str, ...]) -> str:
        index_name = f"idx_{self.name}_{'_'.join(cols)}"
        return f"CREATE INDEX IF NOT EXISTS [{index_name}] ON [{self.name}] ({', '.join(f'[{c}]' for c in cols)})"


def _c(name: str, type_: str, description: str) -> Column:
    return Column(name, type_, description)


# Columns shared by every row that can be matched to a signature (flows, connections, events, dns).
_SIGNATURE_COLUMNS = (
    _c("signature_id", "TEXT", "Id of the documented endpoint (signature) this matched; 'undocumented' if none"),
    _c("category", "TEXT", "Signature category (diagnostic-data, connected-experience, third-party-sharing, …)"),
    _c("vendor", "TEXT", "Vendor the signature documents"),
    _c("data_flow", "TEXT",
       "Who receives the data, per the signature: first-party (the vendor itself), vendor-affiliate or third-party"),
)

SESSIONS = Table(
    "sessions",
    "One capture or import run. Every row in every other table belongs to a session.",
    (
        _c("id", "INTEGER PRIMARY KEY", "Session number"),
        _c("label", "TEXT", "Scenario label given with --session (e.g. 'baseline, Office default settings')"),
        _c("kind", "TEXT", "live (teletap run / mitmdump) or import"),
        _c("started", "TEXT", "When the session started (ISO-8601 UTC)"),
        _c("ended", "TEXT", "When the session ended cleanly (empty if it is running or was killed)"),
        _c("teletap_version", "TEXT", "teletap version that recorded it"),
        _c("mitmproxy_version", "TEXT", "mitmproxy version that recorded it"),
        _c("options", "TEXT", "Proxy and teletap options in force (JSON)"),
        _c("signature_set_hash", "TEXT", "SHA-256 of the signature set used for matching"),
        _c("hostname", "TEXT", "Machine teletap ran on"),
        _c("items_recorded", "INTEGER", "Rows written for this session so far"),
        _c("items_unrecorded", "INTEGER",
           "Items that could not be recorded (ingest queue full, write errors); 0 means nothing is missing"),
        _c("unrecorded_reasons", "TEXT", "Why items went unrecorded, with counts (JSON)"),
    ),
    label_column="label",
)

HOSTS_COVERING_INDEX = ("host", "signature_id", "category", "vendor", "data_flow", "session_id", "request_size_wire",
                        "request_time")

FLOWS = Table(
    "flows",
    "Every HTTP(S) request that passed through the proxy, with its response or error.",
    (
        _c("id", "TEXT PRIMARY KEY", "Flow id (mitmproxy's flow id, or a stable id for imported entries)"),
        _c("session_id", "INTEGER", "Session this flow belongs to"),
        _c("request_time", "TEXT", "When the request started (ISO-8601 UTC)"),
        _c("response_time", "TEXT", "When the response ended (ISO-8601 UTC)"),
        _c("duration_ms", "REAL", "Milliseconds from request start to response end"),
        _c("client_address", "TEXT", "Address of the client that sent the request"),
        _c("client_port", "INTEGER", "Client's source port"),
        _c("server_address", "TEXT", "Address of the server teletap connected to (empty if none)"),
        _c("server_port", "INTEGER", "Server port"),
        _c("scheme", "TEXT", "http or https"),
        _c("host", "TEXT", "Host name the client asked for (Host header / SNI), not just an IP"),
        _c("port", "INTEGER", "Destination port"),
        _c("method", "TEXT", "HTTP method"),
        _c("path", "TEXT", "Path without the query string"),
        _c("query", "TEXT", "Query string (without '?')"),
        _c("url", "TEXT", "Full URL"),
        _c("http_version", "TEXT", "HTTP/1.1, HTTP/2.0, …"),
        _c("status", "INTEGER", "Response status code (empty if there was no response)"),
        _c("request_headers", "TEXT", "Request headers as sent, in order (JSON list of [name, value])"),
        _c("response_headers", "TEXT", "Response headers (JSON list of [name, value])"),
        _c("request_content_type", "TEXT", "Content-Type of the request body"),
        _c("response_content_type", "TEXT", "Content-Type of the response body"),
        _c("request_content_encoding", "TEXT", "Content-Encoding of the request body as sent"),
        _c("request_size_wire", "INTEGER", "Request body size in bytes as sent (before content decoding)"),
        _c("request_size", "INTEGER", "Request body size after removing content-encoding"),
        _c("response_size_wire", "INTEGER", "Response body size in bytes as received"),
        _c("response_size", "INTEGER", "Response body size after removing content-encoding"),
        _c("request_sha256", "TEXT", "SHA-256 of the request body as sent (evidence hash)"),
        _c("response_sha256", "TEXT", "SHA-256 of the response body as received"),
        _c("request_body", "BLOB", "Request body with content-encoding removed, up to the configured limit"),
        _c("request_body_truncated", "INTEGER", "1 if request_body holds only the first part of the body"),
        _c("response_body", "BLOB", "Response body with content-encoding removed, up to the configured limit"),
        _c("response_body_truncated", "INTEGER", "1 if response_body holds only the first part of the body"),
        _c("error", "TEXT", "Why the flow failed (upstream unreachable, TLS failure, …), empty if it did not"),
        _c("answered_by_teletap", "INTEGER", "1 if teletap answered the request itself (sinkhole) and nothing left"),
        _c("sinkhole_rule", "TEXT", "The --sinkhole selector that answered it"),
        _c("tls_version", "TEXT", "TLS version between client and teletap"),
        _c("sni", "TEXT", "TLS server name the client sent"),
        *_SIGNATURE_COLUMNS,
        _c("decode_format", "TEXT", "Payload format recognised (1ds-bond, 1ds-json, aria, appinsights, json, …)"),
        _c("decode_error", "TEXT", "Why (part of) the body could not be decoded; the body stays for teletap redecode"),
        _c("decode_error_offset", "INTEGER", "Byte offset in the decoded body where decoding stopped"),
        _c("decode_notes", "TEXT", "Decoder notes (JSON list)"),
        _c("event_count", "INTEGER", "Number of decoded events"),
        _c("finding_count", "INTEGER", "Number of personal-data findings"),
        _c("source", "TEXT", "live, or the file a flow was imported from"),
        # Last: databases from before v4 get it by ALTER TABLE, which appends.
        _c("analysis", "TEXT",
           "Empty: decoded and scanned for personal data. 'deferred': stored while ingest was behind, with the "
           "bodies as sent; events and findings follow when ingest catches up (or teletap redecode --deferred)"),
    ),
    foreign_keys=(("session_id", "sessions", "id"), ("signature_id", "signatures", "id")),
    indexes=(("session_id",), ("host",), ("request_time",), ("signature_id",), ("category",),
             # Covers "hosts contacted": grouped by host without fetching each (body-laden) row (v2).
             HOSTS_COVERING_INDEX),
    label_column="url",
    # Ingest finds the flows still waiting for analysis without a scan; analysed flows are not in it (v4).
    extra_sql=("CREATE INDEX IF NOT EXISTS [idx_flows_analysis] ON [flows] ([analysis]) WHERE [analysis] IS NOT NULL",),
)

CONNECTIONS = Table(
    "connections",
    "Connections that carried no auditable HTTP: TLS the client refused (certificate pinning, untrusted CA), "
    "TLS failures toward servers, hosts passed through without interception, and raw TCP/UDP.",
    (
        _c("id", "TEXT PRIMARY KEY", "Connection id"),
        _c("session_id", "INTEGER", "Session this connection belongs to"),
        _c("kind", "TEXT",
           "tls-failed-client (client refused teletap's certificate), tls-failed-server, passthrough, tcp or udp"),
        _c("started", "TEXT", "When the connection started (ISO-8601 UTC)"),
        _c("ended", "TEXT", "When it ended (ISO-8601 UTC)"),
        _c("duration_ms", "REAL", "Duration in milliseconds"),
        _c("client_address", "TEXT", "Client address"),
        _c("client_port", "INTEGER", "Client source port"),
        _c("server_address", "TEXT", "Server address"),
        _c("server_port", "INTEGER", "Server port"),
        _c("sni", "TEXT", "TLS server name the client asked for"),
        _c("alpn", "TEXT", "ALPN protocols the client offered"),
        _c("tls_version", "TEXT", "TLS version, where negotiated"),
        _c("observable", "INTEGER", "1 if teletap could read the payload, 0 if it could not (see reason)"),
        _c("reason", "TEXT", "Why the payload was not observable or the connection failed"),
        _c("bytes_from_client", "INTEGER", "Bytes the client sent (where counted)"),
        _c("bytes_from_server", "INTEGER", "Bytes the server sent (where counted)"),
        *_SIGNATURE_COLUMNS,
    ),
    foreign_keys=(("session_id", "sessions", "id"), ("signature_id", "signatures", "id")),
    indexes=(("session_id",), ("sni",), ("started",), ("observable",)),
    label_column="sni",
)

WEBSOCKET_MESSAGES = Table(
    "websocket_messages",
    "Messages exchanged over WebSocket connections, linked to the flow that opened them.",
    (
        _c("id", "INTEGER PRIMARY KEY", "Message number"),
        _c("flow_id", "TEXT", "The HTTP flow that upgraded to WebSocket"),
        _c("session_id", "INTEGER", "Session"),
        _c("time", "TEXT", "When the message was sent (ISO-8601 UTC)"),
        _c("direction", "TEXT", "client-to-server or server-to-client"),
        _c("is_text", "INTEGER", "1 for a text message, 0 for binary"),
        _c("size", "INTEGER", "Message size in bytes"),
        _c("content", "BLOB", "Message content, up to the configured limit"),
        _c("truncated", "INTEGER", "1 if content holds only the first part"),
    ),
    foreign_keys=(("flow_id", "flows", "id"), ("session_id", "sessions", "id")),
    indexes=(("flow_id",), ("session_id",)),
)

DNS = Table(
    "dns",
    "DNS queries and answers seen by mitmproxy's DNS mode (on a gateway), so hosts contacted without "
    "intercepted HTTP are still seen.",
    (
        _c("id", "TEXT PRIMARY KEY", "DNS flow id"),
        _c("session_id", "INTEGER", "Session"),
        _c("time", "TEXT", "When the query arrived (ISO-8601 UTC)"),
        _c("client_address", "TEXT", "Client that asked"),
        _c("question", "TEXT", "Name asked for"),
        _c("question_type", "TEXT", "Record type asked for (A, AAAA, HTTPS, …)"),
        _c("answers", "TEXT", "Answers (JSON list)"),
        _c("response_code", "TEXT", "DNS response code"),
        _c("error", "TEXT", "Error, if the query failed"),
        *_SIGNATURE_COLUMNS,
    ),
    foreign_keys=(("session_id", "sessions", "id"), ("signature_id", "signatures", "id")),
    indexes=(("session_id",), ("question",)),
    label_column="question",
)

EVENTS = Table(
    "events",
    "Telemetry and other machine-readable records decoded from request bodies (1DS Bond and JSON, Aria, "
    "Application Insights, OneSettings/ECS configuration, generic JSON/form/multipart/protobuf, JWT claims).",
    (
        _c("id", "INTEGER PRIMARY KEY", "Event number"),
        _c("flow_id", "TEXT", "Flow whose body held this event"),
        _c("session_id", "INTEGER", "Session"),
        _c("direction", "TEXT", "request (sent by the client) or response (sent by the server, e.g. config)"),
        _c("position", "INTEGER", "Position of the event within its batch"),
        _c("format", "TEXT", "Payload format: 1ds-bond, 1ds-json, aria, appinsights, onesettings, ecs, json, …"),
        _c("name", "TEXT", "Event name"),
        _c("time", "TEXT", "Event time as the client stamped it (ISO-8601 UTC)"),
        _c("ikey", "TEXT", "Instrumentation key / tenant token the event was sent under"),
        _c("tenant_id", "TEXT", "Tenant id (Azure AD) where present"),
        _c("sdk_version", "TEXT", "Telemetry SDK version"),
        _c("app_id", "TEXT", "Application id"),
        _c("app_version", "TEXT", "Application version"),
        _c("os_name", "TEXT", "Operating system name"),
        _c("os_version", "TEXT", "Operating system version"),
        _c("device_id", "TEXT", "Device identifier the event carries"),
        _c("user_id", "TEXT", "User identifier the event carries"),
        _c("documented_level", "TEXT",
           "What Microsoft documents for this event name: office-required, office-essential-service, "
           "windows-required, or undocumented"),
        _c("data", "TEXT", "The whole decoded event (JSON), with the vendor's PII annotations kept"),
        _c("pii", "TEXT", "Fields the vendor annotates as PII or customer content (JSON list)"),
        *_SIGNATURE_COLUMNS,
    ),
    foreign_keys=(("flow_id", "flows", "id"), ("session_id", "sessions", "id"),
                  ("signature_id", "signatures", "id")),
    indexes=(("flow_id",), ("session_id",), ("name",), ("format",)),
    label_column="name",
)

FINDINGS = Table(
    "findings",
    "Personal data found in flows and events: detector matches, known identifiers of the organisation, "
    "canaries, and fields the vendor itself annotates as PII.",
    (
        _c("id", "INTEGER PRIMARY KEY", "Finding number"),
        _c("flow_id", "TEXT", "Flow it was found in"),
        _c("event_id", "INTEGER", "Decoded event it was found in (empty if found in the URL, headers or body)"),
        _c("session_id", "INTEGER", "Session"),
        _c("location", "TEXT", "Where: url, query:NAME, header:NAME, body, or event:PATH"),
        _c("kind", "TEXT", "What was found (email, ipv4-public, canary, known-email, vendor-pii:…, …)"),
        _c("detector", "TEXT", "Detector and encoding that found it (regex:email, known:sha256-lower, …)"),
        _c("confidence", "REAL", "0 to 1"),
        _c("severity", "TEXT", "low, medium or high (high: canaries, and personal data sent to third parties)"),
        _c("preview", "TEXT", "Redacted preview of the value"),
        _c("value_hash", "TEXT", "Keyed hash of the value: equal values share it, the value itself is not stored"),
        _c("value", "TEXT", "The clear value; empty unless findings were stored in clear "
           "(teletap_findings_store_clear)"),
        _c("host", "TEXT", "Destination host of the flow"),
        *_SIGNATURE_COLUMNS,
    ),
    foreign_keys=(("flow_id", "flows", "id"), ("event_id", "events", "id"), ("session_id", "sessions", "id"),
                  ("signature_id", "signatures", "id")),
    indexes=(("flow_id",), ("session_id",), ("kind",), ("value_hash",)),
    label_column="kind",
)

SIGNATURES = Table(
    "signatures",
    "The documented endpoints teletap matched traffic against, with their provenance.",
    (
        _c("id", "TEXT PRIMARY KEY", "Stable signature id"),
        _c("name", "TEXT", "What the endpoint is"),
        _c("vendor", "TEXT", "Vendor"),
        _c("product", "TEXT", "Product"),
        _c("component", "TEXT", "Component"),
        _c("category", "TEXT", "Category"),
        _c("data_flow", "TEXT", "first-party, vendor-affiliate or third-party"),
        _c("essential", "INTEGER", "1 if the vendor says it cannot be disabled"),
        _c("levels", "TEXT", "Diagnostic levels that send it (JSON)"),
        _c("controls", "TEXT", "Policies and settings that switch it off (JSON)"),
        _c("documentation_url", "TEXT", "Where the vendor documents it"),
        _c("documentation", "TEXT", "Documentation details: URLs, quote, date checked (JSON)"),
        _c("expect", "TEXT", "What to expect (TLS pinning, payload format) (JSON)"),
        _c("match", "TEXT", "Match rules (JSON)"),
        _c("notes", "TEXT", "Notes"),
        _c("source_file", "TEXT", "Signature file it came from"),
    ),
    label_column="name",
)

# Summaries: per-session aggregates that ingest keeps in the same transaction as the rows they count
# (addons/summaries.py), so the canned queries and charts answer from thousands of rows instead of
# millions. Key columns hold '' rather than NULL: a primary key column of a WITHOUT ROWID table cannot be
# NULL, and '' keeps one row per key. A row whose count (``Table.count_column``) drops to 0, as when a flow
# is replaced on redecode or re-import, is deleted.
_SUMMARY_NOTE = " Kept by ingest with the rows it counts; rebuilt from them on upgrade."


_SUMMARY_SIGNATURE = (
    _c("signature_id", "TEXT", "Signature id ('undocumented' if none matched)"),
    _c("category", "TEXT", "Signature category ('' if none)"),
    _c("vendor", "TEXT", "Vendor ('' if none)"),
    _c("data_flow", "TEXT", "first-party, vendor-affiliate or third-party ('' if none)"),
)
_SEEN_COLUMNS = (
    _c("first_seen", "TEXT", "Earliest time among the counted rows (ISO-8601 UTC)"),
    _c("last_seen", "TEXT", "Latest time among the counted rows (ISO-8601 UTC)"),
)

SUMMARY_ENDPOINTS = Table(
    "summary_endpoints",
    "What was contacted, per session: HTTP flows and unreadable connections counted by destination host, "
    "signature and request content type." + _SUMMARY_NOTE,
    (
        _c("session_id", "INTEGER", "Session"),
        _c("source", "TEXT", "flow (HTTP flows) or connection (connections teletap could not or did not read)"),
        _c("host", "TEXT", "Destination host (flows: host; connections: SNI, else server address)"),
        *_SUMMARY_SIGNATURE,
        _c("content_type", "TEXT", "Request media type, lower case and without parameters ('' if none)"),
        _c("items", "INTEGER", "Flows or connections counted"),
        _c("bytes_sent", "INTEGER", "Request bytes as sent (connections: bytes from the client)"),
        _c("bytes_received", "INTEGER", "Response bytes as received (connections: bytes from the server)"),
        _c("events", "INTEGER", "Decoded events in these flows"),
        _c("findings", "INTEGER", "Personal-data findings in these flows"),
        *_SEEN_COLUMNS,
    ),
    key=("host", "signature_id", "category", "vendor", "data_flow", "source", "content_type", "session_id"),
)

SUMMARY_CLIENTS = Table(
    "summary_clients",
    "What each client contacted, per session: flows and unreadable connections counted by client address, "
    "destination host and signature." + _SUMMARY_NOTE,
    (
        _c("session_id", "INTEGER", "Session"),
        _c("client_address", "TEXT", "Client address ('' if unknown)"),
        _c("source", "TEXT", "flow or connection"),
        _c("host", "TEXT", "Destination host (flows: host; connections: SNI, else server address)"),
        _c("signature_id", "TEXT", "Signature id ('undocumented' if none matched)"),
        _c("items", "INTEGER", "Flows or connections counted"),
        _c("bytes_sent", "INTEGER", "Request bytes as sent (connections: bytes from the client)"),
        _c("events", "INTEGER", "Decoded events in these flows"),
        _c("findings", "INTEGER", "Personal-data findings in these flows"),
        *_SEEN_COLUMNS,
    ),
    key=("client_address", "host", "source", "signature_id", "session_id"),
)

SUMMARY_TRAFFIC = Table(
    "summary_traffic",
    "HTTP flows and bytes per minute and signature category, per session." + _SUMMARY_NOTE,
    (
        _c("session_id", "INTEGER", "Session"),
        _c("minute", "TEXT", "Minute the requests started in (YYYY-MM-DDTHH:MM, UTC)"),
        _c("category", "TEXT", "Signature category ('' if none)"),
        _c("flows", "INTEGER", "Flows"),
        _c("bytes_sent", "INTEGER", "Request bytes as sent"),
        _c("bytes_received", "INTEGER", "Response bytes as received"),
    ),
    key=("minute", "category", "session_id"),
)

SUMMARY_EVENTS = Table(
    "summary_events",
    "Decoded events counted by name, format, documented level, direction and destination, per session."
    + _SUMMARY_NOTE,
    (
        _c("session_id", "INTEGER", "Session"),
        _c("name", "TEXT", "Event name ('' if the record has none)"),
        _c("format", "TEXT", "Payload format"),
        _c("documented_level", "TEXT", "What Microsoft documents for the name ('undocumented' if nothing)"),
        _c("direction", "TEXT", "request or response"),
        _c("host", "TEXT", "Destination host of the flows"),
        *_SUMMARY_SIGNATURE,
        _c("events", "INTEGER", "Events counted"),
        _c("flows", "INTEGER", "Flows that carried them (each flow counts once)"),
        *_SEEN_COLUMNS,
    ),
    key=("name", "format", "documented_level", "direction", "host", "signature_id", "category", "vendor", "data_flow",
         "session_id"),
)

SUMMARY_FINDINGS = Table(
    "summary_findings",
    "Personal-data findings counted by kind, destination, severity, location and keyed value hash, per session "
    "(one row per distinct value, so distinct values can be counted without reading the findings)."
    + _SUMMARY_NOTE,
    (
        _c("session_id", "INTEGER", "Session"),
        _c("kind", "TEXT", "What was found"),
        _c("host", "TEXT", "Destination host"),
        *_SUMMARY_SIGNATURE,
        _c("severity", "TEXT", "low, medium or high"),
        _c("location", "TEXT", "Where in the flow"),
        _c("value_hash", "TEXT", "Keyed hash of the value"),
        _c("findings", "INTEGER", "Findings counted"),
        *_SEEN_COLUMNS,
    ),
    key=("kind", "host", "data_flow", "vendor", "severity", "value_hash", "location", "signature_id", "category",
         "session_id"),
)

SUMMARIES: tuple[Table, ...] = (SUMMARY_ENDPOINTS, SUMMARY_CLIENTS, SUMMARY_TRAFFIC, SUMMARY_EVENTS, SUMMARY_FINDINGS)

SCHEMA_INFO = Table(
    "teletap_schema",
    "Schema version of this database (teletap upgrades older databases and refuses newer ones).",
    (
        _c("version", "INTEGER", "Schema version"),
        _c("upgraded", "TEXT", "When this version was applied (ISO-8601 UTC)"),
        _c("teletap_version", "TEXT", "teletap version that applied it"),
    ),
)

TABLES: tuple[Table, ...] = (SCHEMA_INFO, SESSIONS, SIGNATURES, FLOWS, CONNECTIONS, WEBSOCKET_MESSAGES, DNS,
                             EVENTS, FINDINGS, *SUMMARIES)
TABLES_BY_NAME = {t.name: t for t in TABLES}
