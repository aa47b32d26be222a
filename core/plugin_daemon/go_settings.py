"""The Go daemon's settings: which of them this daemon honours, and why the others are not.

Every environment variable the Go daemon reads (``internal/types/app/config.go`` of
langgenius/dify-plugin-daemon at bdb5642a) is either a field of
:class:`plugin_daemon.config.Settings`, read with Go's meaning, unit and default, or listed in
:data:`UNSUPPORTED` with the reason. One set to a value that asks for something this daemon
does not do gives one warning at start that names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_GO_CONFIG_NAMES = (
    "SERVER_HOST SERVER_PORT SERVER_KEY SERVER_TZ ADMIN_API_ENABLED ADMIN_API_KEY DIFY_INNER_API_URL "
    "DIFY_INNER_API_KEY PLUGIN_STORAGE_TYPE PLUGIN_STORAGE_OSS_BUCKET S3_USE_AWS_MANAGED_IAM S3_USE_AWS "
    "S3_ENDPOINT S3_USE_PATH_STYLE AWS_ACCESS_KEY AWS_SECRET_KEY AWS_REGION TENCENT_COS_SECRET_KEY "
    "TENCENT_COS_SECRET_ID TENCENT_COS_REGION TENCENT_COS_ENDPOINT AZURE_BLOB_STORAGE_CONTAINER_NAME "
    "AZURE_BLOB_STORAGE_CONNECTION_STRING AZURE_BLOB_STORAGE_ACCOUNT_URL AZURE_BLOB_STORAGE_USE_MANAGED_IDENTITY "
    "ALIYUN_OSS_REGION ALIYUN_OSS_ENDPOINT ALIYUN_OSS_ACCESS_KEY_ID ALIYUN_OSS_ACCESS_KEY_SECRET "
    "ALIYUN_OSS_AUTH_VERSION ALIYUN_OSS_PATH ALIYUN_OSS_CLOUDBOX_ID GCS_CREDENTIALS HUAWEI_OBS_ACCESS_KEY "
    "HUAWEI_OBS_SECRET_KEY HUAWEI_OBS_SERVER HUAWEI_OBS_PATH_STYLE VOLCENGINE_TOS_ENDPOINT "
    "VOLCENGINE_TOS_ACCESS_KEY VOLCENGINE_TOS_SECRET_KEY VOLCENGINE_TOS_REGION BAIDU_BOS_ENDPOINT "
    "BAIDU_BOS_ACCESS_KEY BAIDU_BOS_SECRET_KEY BAIDU_BOS_REGION PLUGIN_STORAGE_LOCAL_ROOT "
    "PLUGIN_REMOTE_INSTALLING_HOST PLUGIN_REMOTE_INSTALLING_PORT PLUGIN_REMOTE_INSTALLING_ENABLED "
    "PLUGIN_REMOTE_INSTALLING_MAX_CONN PLUGIN_REMOTE_INSTALLING_MAX_SINGLE_TENANT_CONN "
    "PLUGIN_REMOTE_INSTALL_SERVER_EVENT_LOOP_NUMS PLUGIN_ENDPOINT_ENABLED PLUGIN_WORKING_PATH "
    "PLUGIN_MEDIA_CACHE_SIZE PLUGIN_ASSET_CACHE_SIZE PLUGIN_MEDIA_CACHE_PATH PLUGIN_INSTALLED_PATH "
    "PLUGIN_PACKAGE_CACHE_PATH PLUGIN_MODEL_INSTALLATIONS_CACHE_ENABLED PLUGIN_MODEL_INSTALLATIONS_CACHE_TTL "
    "PLUGIN_MAX_EXECUTION_TIMEOUT PLUGIN_INSTALL_TIMEOUT PLUGIN_LOCAL_LAUNCHING_CONCURRENT PLATFORM "
    "ROUTINE_POOL_SIZE REDIS_HOST REDIS_PORT REDIS_PASSWORD REDIS_USERNAME REDIS_DB REDIS_KEY_PREFIX "
    "REDIS_USE_SSL REDIS_SSL_CERT_REQS REDIS_SSL_CA_CERTS REDIS_USE_AZURE_MANAGED_IDENTITY REDIS_USE_SENTINEL "
    "REDIS_SENTINELS REDIS_SENTINEL_SERVICE_NAME REDIS_SENTINEL_USERNAME REDIS_SENTINEL_PASSWORD "
    "REDIS_SENTINEL_SOCKET_TIMEOUT DB_TYPE DB_USERNAME DB_PASSWORD DB_HOST DB_PORT DB_DATABASE "
    "DB_DEFAULT_DATABASE DB_SSL_MODE DB_MAX_IDLE_CONNS DB_MAX_OPEN_CONNS DB_CONN_MAX_LIFETIME DB_EXTRAS "
    "DB_CHARSET DB_GORM_LOG_LEVEL DB_CONNECT_TIMEOUT DB_READ_TIMEOUT DB_WRITE_TIMEOUT PERSISTENCE_STORAGE_PATH "
    "PERSISTENCE_STORAGE_MAX_SIZE FORCE_VERIFYING_SIGNATURE THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED "
    "THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES "
    "LIFETIME_COLLECTION_HEARTBEAT_INTERVAL LIFETIME_COLLECTION_GC_INTERVAL LIFETIME_STATE_GC_INTERVAL "
    "DIFY_INVOCATION_CONNECTION_IDLE_TIMEOUT DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL "
    "DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY DIFY_PLUGIN_SERVERLESS_CONNECTOR_LAUNCH_TIMEOUT "
    "MAX_SERVERLESS_RETRY_TIMES MAX_SERVERLESS_REQUEST_BYTES MAX_PLUGIN_PACKAGE_SIZE MAX_BUNDLE_PACKAGE_SIZE "
    "MAX_SERVERLESS_TRANSACTION_TIMEOUT PYTHON_INTERPRETER_PATH UV_PATH PYTHON_ENV_INIT_TIMEOUT "
    "PYTHON_COMPILE_ALL_EXTRA_ARGS PIP_MIRROR_AUTO_DETECT PIP_MIRROR_URL PIP_MIRROR_CANDIDATES "
    "PIP_MIRROR_AUTO_DETECT_TIMEOUT PIP_PREFER_BINARY PIP_VERBOSE PIP_EXTRA_ARGS PLUGIN_IGNORE_UV_LOCK "
    "PLUGIN_RUNTIME_BUFFER_SIZE PLUGIN_RUNTIME_MAX_BUFFER_SIZE PLUGIN_STDIO_BUFFER_SIZE "
    "PLUGIN_STDIO_MAX_BUFFER_SIZE DISPLAY_CLUSTER_LOG PPROF_ENABLED ENABLE_OTEL OTLP_TRACE_ENDPOINT "
    "OTLP_METRIC_ENDPOINT OTLP_BASE_ENDPOINT OTEL_API_KEY OTEL_EXPORTER_OTLP_PROTOCOL OTEL_EXPORTER_TYPE "
    "OTEL_SAMPLING_RATE OTEL_BATCH_EXPORT_SCHEDULE_DELAY OTEL_MAX_QUEUE_SIZE OTEL_MAX_EXPORT_BATCH_SIZE "
    "OTEL_METRIC_EXPORT_INTERVAL OTEL_BATCH_EXPORT_TIMEOUT OTEL_METRIC_EXPORT_TIMEOUT PROMETHEUS_ENABLED "
    "SENTRY_ENABLED SENTRY_DSN SENTRY_ATTACH_STACKTRACE SENTRY_TRACING_ENABLED SENTRY_TRACES_SAMPLE_RATE "
    "SENTRY_SAMPLE_RATE HTTP_PROXY HTTPS_PROXY NO_PROXY HEALTH_API_LOG_ENABLED LOG_LEVEL LOG_OUTPUT_FORMAT "
    "LOG_FILE DIFY_BACKWARDS_INVOCATION_WRITE_TIMEOUT DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT "
    "RESPONSE_MAX_BUFFER_SIZE"
)
#: Every name in the Go daemon's internal/types/app/config.go (bdb5642a), in its order.
GO_SETTING_NAMES = tuple(_GO_CONFIG_NAMES.split())

#: Values that ask for nothing (the feature off, or Go's own default): never warned about.
_OFF = frozenset({"", "false", "0", "no", "off"})


@dataclass(frozen=True)
class Unsupported:
    """Why a Go setting has no effect here, and which of its values ask for nothing."""

    reason: str
    harmless: frozenset[str] = _OFF
    #: never warned about: Go itself ignores it in every setup this daemon accepts
    silent: bool = False


_OBJECT_STORAGE = Unsupported(
    "object storage: Go reads it only when PLUGIN_STORAGE_TYPE is not local, which this daemon refuses "
    "(it keeps packages, assets and plugin storage under PLUGIN_STORAGE_LOCAL_ROOT)",
    silent=True,
)
_REDIS = Unsupported(
    "Redis: this daemon runs as one node and keeps no state in Redis (Go needs it for its cluster)",
    harmless=_OFF | {"6379", "plugin_daemon", "cert_none", "0.1"},
)
_CLUSTER = Unsupported("Go's cluster bookkeeping: this daemon runs as one node")
_OTEL = Unsupported(
    "OpenTelemetry export is not built in; use PROMETHEUS_ENABLED (/metrics) and LOG_OUTPUT_FORMAT=json",
    harmless=_OFF
    | {"http://localhost:4318", "http/protobuf", "otlp", "1.0", "1", "5000", "2048", "512"}
    | {"60000", "10000", "30000"},
)
_SENTRY = Unsupported(
    "Sentry reporting is not built in; errors are in the log (LOG_OUTPUT_FORMAT=json for a collector)"
)
_DB_TUNING = Unsupported(
    "Go's GORM logging and timeouts; this daemon uses SQLAlchemy's and the drivers' defaults",
    harmless=_OFF | {"10", "30", "3600", "5s", "30s"},
)
_PIP = Unsupported(
    "pip options: plugin environments are built with uv, which prefers wheels and probes no mirrors "
    "(set PIP_MIRROR_URL for a mirror)",
    harmless=_OFF | {"true", "1", "5"},
)
_GO_BUFFERS = Unsupported(
    "the initial size of Go's line buffer; this daemon's reader grows as needed up to PLUGIN_RUNTIME_MAX_BUFFER_SIZE",
    harmless=_OFF | {"1024"},
)

#: Go's settings this daemon does not honour, with the reason (README lists them too).
UNSUPPORTED: dict[str, Unsupported] = {
    "SERVER_TZ": Unsupported("times are kept and logged in UTC", harmless=_OFF | {"utc"}),
    **dict.fromkeys(
        ["ADMIN_API_ENABLED", "ADMIN_API_KEY"],
        Unsupported(
            "Go's /admin routes (reinstalling a serverless plugin, switching its endpoint: operations of "
            "Dify's hosted service) are not served"
        ),
    ),
    **dict.fromkeys(
        [
            "PLUGIN_STORAGE_OSS_BUCKET",
            "S3_USE_AWS_MANAGED_IAM",
            "S3_USE_AWS",
            "S3_ENDPOINT",
            "S3_USE_PATH_STYLE",
            "AWS_ACCESS_KEY",
            "AWS_SECRET_KEY",
            "AWS_REGION",
            "TENCENT_COS_SECRET_KEY",
            "TENCENT_COS_SECRET_ID",
            "TENCENT_COS_REGION",
            "TENCENT_COS_ENDPOINT",
            "AZURE_BLOB_STORAGE_CONTAINER_NAME",
            "AZURE_BLOB_STORAGE_CONNECTION_STRING",
            "AZURE_BLOB_STORAGE_ACCOUNT_URL",
            "AZURE_BLOB_STORAGE_USE_MANAGED_IDENTITY",
            "ALIYUN_OSS_REGION",
            "ALIYUN_OSS_ENDPOINT",
            "ALIYUN_OSS_ACCESS_KEY_ID",
            "ALIYUN_OSS_ACCESS_KEY_SECRET",
            "ALIYUN_OSS_AUTH_VERSION",
            "ALIYUN_OSS_PATH",
            "ALIYUN_OSS_CLOUDBOX_ID",
            "GCS_CREDENTIALS",
            "HUAWEI_OBS_ACCESS_KEY",
            "HUAWEI_OBS_SECRET_KEY",
            "HUAWEI_OBS_SERVER",
            "HUAWEI_OBS_PATH_STYLE",
            "VOLCENGINE_TOS_ENDPOINT",
            "VOLCENGINE_TOS_ACCESS_KEY",
            "VOLCENGINE_TOS_SECRET_KEY",
            "VOLCENGINE_TOS_REGION",
            "BAIDU_BOS_ENDPOINT",
            "BAIDU_BOS_ACCESS_KEY",
            "BAIDU_BOS_SECRET_KEY",
            "BAIDU_BOS_REGION",
        ],
        _OBJECT_STORAGE,
    ),
    "PLUGIN_REMOTE_INSTALL_SERVER_EVENT_LOOP_NUMS": Unsupported(
        "Go's event-loop count for the debug listener; this daemon serves it on its one event loop",
        harmless=_OFF | {"8"},
    ),
    "PLUGIN_MEDIA_CACHE_SIZE": Unsupported(
        "Go's in-memory cache of assets; assets are read from PLUGIN_MEDIA_CACHE_PATH", harmless=_OFF | {"1024"}
    ),
    "PLUGIN_ASSET_CACHE_SIZE": Unsupported(
        "Go's in-memory cache of assets; assets are read from PLUGIN_MEDIA_CACHE_PATH", harmless=_OFF | {"256"}
    ),
    "PLUGIN_MODEL_INSTALLATIONS_CACHE_ENABLED": Unsupported(
        "Go's Redis cache of a tenant's model list; this daemon answers it from the database"
    ),
    "PLUGIN_MODEL_INSTALLATIONS_CACHE_TTL": Unsupported(
        "Go's Redis cache of a tenant's model list; this daemon answers it from the database",
        harmless=_OFF | {"1440"},
    ),
    "ROUTINE_POOL_SIZE": Unsupported("Go's goroutine pool; this daemon runs on one asyncio event loop"),
    **dict.fromkeys(
        [
            "REDIS_HOST",
            "REDIS_PORT",
            "REDIS_PASSWORD",
            "REDIS_USERNAME",
            "REDIS_DB",
            "REDIS_KEY_PREFIX",
            "REDIS_USE_SSL",
            "REDIS_SSL_CERT_REQS",
            "REDIS_SSL_CA_CERTS",
            "REDIS_USE_AZURE_MANAGED_IDENTITY",
            "REDIS_USE_SENTINEL",
            "REDIS_SENTINELS",
            "REDIS_SENTINEL_SERVICE_NAME",
            "REDIS_SENTINEL_USERNAME",
            "REDIS_SENTINEL_PASSWORD",
            "REDIS_SENTINEL_SOCKET_TIMEOUT",
        ],
        _REDIS,
    ),
    **dict.fromkeys(
        [
            "DB_GORM_LOG_LEVEL",
            "DB_CONNECT_TIMEOUT",
            "DB_READ_TIMEOUT",
            "DB_WRITE_TIMEOUT",
        ],
        _DB_TUNING,
    ),
    **dict.fromkeys(
        ["LIFETIME_COLLECTION_HEARTBEAT_INTERVAL", "LIFETIME_COLLECTION_GC_INTERVAL", "LIFETIME_STATE_GC_INTERVAL"],
        _CLUSTER,
    ),
    "DISPLAY_CLUSTER_LOG": _CLUSTER,
    "DIFY_INVOCATION_CONNECTION_IDLE_TIMEOUT": Unsupported(
        "Go reads it but never uses it (its client to Dify keeps idle connections 120 s, fixed); this "
        "daemon's client keeps httpx's default",
        harmless=_OFF | {"120"},
    ),
    "PYTHON_COMPILE_ALL_EXTRA_ARGS": Unsupported("plugin code is not precompiled with compileall"),
    **dict.fromkeys(
        ["PIP_MIRROR_AUTO_DETECT", "PIP_MIRROR_CANDIDATES", "PIP_MIRROR_AUTO_DETECT_TIMEOUT"]
        + ["PIP_PREFER_BINARY", "PIP_VERBOSE"],
        _PIP,
    ),
    "PLUGIN_RUNTIME_BUFFER_SIZE": _GO_BUFFERS,
    "PLUGIN_STDIO_BUFFER_SIZE": _GO_BUFFERS,
    "PPROF_ENABLED": Unsupported("Go's profiler routes (/debug/pprof) have no equivalent here"),
    **dict.fromkeys(
        [
            "ENABLE_OTEL",
            "OTLP_TRACE_ENDPOINT",
            "OTLP_METRIC_ENDPOINT",
            "OTLP_BASE_ENDPOINT",
            "OTEL_API_KEY",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_TYPE",
            "OTEL_SAMPLING_RATE",
            "OTEL_BATCH_EXPORT_SCHEDULE_DELAY",
            "OTEL_MAX_QUEUE_SIZE",
            "OTEL_MAX_EXPORT_BATCH_SIZE",
            "OTEL_METRIC_EXPORT_INTERVAL",
            "OTEL_BATCH_EXPORT_TIMEOUT",
            "OTEL_METRIC_EXPORT_TIMEOUT",
        ],
        _OTEL,
    ),
    **dict.fromkeys(
        [
            "SENTRY_ENABLED",
            "SENTRY_DSN",
            "SENTRY_ATTACH_STACKTRACE",
            "SENTRY_TRACING_ENABLED",
            "SENTRY_TRACES_SAMPLE_RATE",
            "SENTRY_SAMPLE_RATE",
        ],
        _SENTRY,
    ),
    "HEALTH_API_LOG_ENABLED": Unsupported(
        "no request log is written, so there is none of /health/check to switch off", harmless=_OFF | {"true", "1"}
    ),
    "RESPONSE_MAX_BUFFER_SIZE": Unsupported(
        "answers from Dify's inner API are streamed, not buffered whole", harmless=_OFF | {"31457280"}
    ),
}


def dotenv_values(path: Path = Path(".env")) -> dict[str, str]:
    """The ``.env`` file the settings read too (empty when there is none)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values as read

    return {name: value or "" for name, value in read(path).items()}


def unsupported_in_use(environ: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Unsupported Go settings set to a value that asks for something: ``{reason: [names]}``."""
    if environ is None:
        environ = {**dotenv_values(), **os.environ}
    found: dict[str, list[str]] = {}
    for name, entry in UNSUPPORTED.items():
        value = environ.get(name, "").strip().lower()
        if entry.silent or value in entry.harmless:
            continue
        found.setdefault(entry.reason, []).append(name)
    return found


def warnings_for(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per reason, naming every setting it covers."""
    return [
        f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} set but not supported: {reason}"
        for reason, names in unsupported_in_use(environ).items()
    ]
