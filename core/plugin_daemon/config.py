"""Daemon configuration: one place for every setting and its default.

Names follow the Go daemon's environment variables wherever one exists, so an operator's
existing ``.env`` keeps working. Values come from the environment, then from ``.env`` in the
current directory, then from the defaults below.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL

#: Keys that were published in Dify's docker-compose files and examples. A daemon that
#: accepts one of them accepts anybody who has read those files.
PUBLIC_DEFAULT_KEYS = frozenset(
    {
        "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi",
        "QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1",
        "difyai123456",
        "dify-sandbox",
        "plugin-daemon-key",
    }
)

MiB = 1024 * 1024
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """A comma-separated CIDR list (a bare address is its own /32 or /128)."""
    networks: list[IPNetwork] = []
    for part in value.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"{part.strip()!r} is not a network in CIDR notation (like 10.0.0.0/8)") from exc
    return tuple(networks)


#: Go's storage keys: folders inside the storage root, whatever their value
STORAGE_KEYS = (
    "PLUGIN_INSTALLED_PATH",
    "PLUGIN_PACKAGE_CACHE_PATH",
    "PLUGIN_MEDIA_CACHE_PATH",
    "PERSISTENCE_STORAGE_PATH",
)


class Settings(BaseSettings):
    """All settings of the daemon. Field names are the environment variable names."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    # --- HTTP server -------------------------------------------------------------------
    #: Go's default (dropin): every address, so another container (Dify's API) reaches it; the
    #: API is guarded by SERVER_KEY, never a public one. 127.0.0.1 keeps it on this machine.
    SERVER_HOST: str = "0.0.0.0"
    SERVER_PORT: int = 5002
    SERVER_KEY: str = ""
    ALLOW_PUBLIC_SERVER_KEY: bool = False
    MAX_REQUEST_BODY_SIZE: int = 60 * MiB

    # --- where state lives (dropin: Go's storage root and the paths under it) -----------
    #: Go's storage: only "local" (a folder) is supported; anything else stops the start.
    PLUGIN_STORAGE_TYPE: str = "local"
    #: The storage root, as Go's PLUGIN_STORAGE_LOCAL_ROOT; unset = PLUGIN_DAEMON_HOME.
    PLUGIN_STORAGE_LOCAL_ROOT: Path | None = None
    #: This daemon's own name for the root (database, server key, everything below).
    PLUGIN_DAEMON_HOME: Path = Path("plugin-daemon-data")
    #: Go's keys inside the storage root. As in Go, they always resolve under the root.
    PLUGIN_INSTALLED_PATH: Path = Path("plugin")
    PLUGIN_PACKAGE_CACHE_PATH: Path = Path("plugin_packages")
    PLUGIN_MEDIA_CACHE_PATH: Path = Path("assets")
    PERSISTENCE_STORAGE_PATH: Path = Path("persistence")
    #: Where plugins are extracted and their environments built: relative = under the root,
    #: absolute = that folder (Go resolves a relative one against its working directory).
    PLUGIN_WORKING_PATH: Path = Path("cwd")

    # --- database (the Go daemon's DB_* settings, read as it reads them) ----------------------
    #: A full SQLAlchemy URL wins over the DB_* parts. Empty + DB_TYPE unset = SQLite in the home folder.
    DATABASE_URL: str = ""
    DB_TYPE: Literal["", "sqlite", "postgresql", "pgbouncer", "mysql"] = ""
    DB_HOST: str = "127.0.0.1"
    #: unset: 5432 for PostgreSQL, 3306 for MySQL
    DB_PORT: int | None = None
    DB_USERNAME: str = "postgres"
    DB_PASSWORD: str = ""
    DB_DATABASE: str = "dify_plugin"
    #: the database connected to first, to create DB_DATABASE when it is missing (unset: postgres / mysql)
    DB_DEFAULT_DATABASE: str = ""
    DB_SSL_MODE: Literal["disable", "require"] = "disable"
    #: PostgreSQL client_encoding / MySQL charset (unset: the server's / utf8mb4)
    DB_CHARSET: str = ""
    #: PostgreSQL connection options, as Go passes them (e.g. "-c search_path=plugins")
    DB_EXTRAS: str = ""
    DB_MAX_OPEN_CONNS: int = 30
    DB_MAX_IDLE_CONNS: int = 10
    #: seconds a pooled connection is kept before it is replaced
    DB_CONN_MAX_LIFETIME: int = 3600

    # --- plugins and packages ----------------------------------------------------------
    PLATFORM: str = "local"
    MAX_PLUGIN_PACKAGE_SIZE: int = 50 * MiB
    MAX_PLUGIN_PACKAGE_ENTRIES: int = 10_000
    MAX_BUNDLE_PACKAGE_SIZE: int = 12 * 50 * MiB
    #: minutes, as in Go (internal/service/install_plugin.go); see install_timeout_seconds
    PLUGIN_INSTALL_TIMEOUT: int = 15
    PLUGIN_MAX_EXECUTION_TIMEOUT: int = 600
    PLUGIN_READY_TIMEOUT: float = 120.0
    #: serve plugin endpoints (public webhooks) at /e/{hook_id}/...
    PLUGIN_ENDPOINT_ENABLED: bool = True
    DISABLED_EXTENSIONS: str = ""

    # --- package signatures (Go's names, meanings and defaults; README "Package signatures") ---
    #: refuse every package that no trusted key verifies (Dify's official key, plus third-party keys)
    FORCE_VERIFYING_SIGNATURE: bool = True
    #: refuse a package whose author is "langgenius" unless a key vouches for the langgenius category
    ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES: bool = True
    #: also trust the public keys listed below (read at start)
    THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED: bool = False
    #: comma-separated paths of PEM RSA public key files
    THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS: str = ""

    # --- local runtime -----------------------------------------------------------------
    PYTHON_INTERPRETER_PATH: str = ""
    PYTHON_ENV_INIT_TIMEOUT: int = 120
    PYTHON_ENV_INIT_HARD_TIMEOUT: int = 600
    UV_PATH: str = ""
    PIP_MIRROR_URL: str = ""
    PIP_EXTRA_INDEX_URL: str = ""
    PIP_EXTRA_ARGS: str = ""
    PLUGIN_IGNORE_UV_LOCK: bool = False
    PLUGIN_LOCAL_LAUNCHING_CONCURRENT: int = 2
    PLUGIN_RUNTIME_MAX_BUFFER_SIZE: int = 5 * MiB
    PLUGIN_HEARTBEAT_TIMEOUT: float = 120.0
    # --- line/1 plugins (plugins in any language, docs/line-protocol.md) -------------------
    #: seconds between the daemon's heartbeats to a line/1 plugin (it answers heartbeat_ack)
    PLUGIN_LINE_HEARTBEAT_INTERVAL: float = 10.0
    PLUGIN_RESTART_MAX_ATTEMPTS: int = 5
    #: a plugin's memory limit is its resource.memory, but never below this (bytes); 0 = no limit
    PLUGIN_MEMORY_LIMIT_FLOOR: int = 1024 * MiB
    # --- lazy start and idle stop (local runtime) ---------------------------------------
    #: seconds with no call and no session in flight after which a local plugin process is stopped
    #: (its environment is kept; the next call starts it again); 0 = never (Go's behaviour: every
    #: installed plugin is started with the daemon and kept running)
    PLUGIN_IDLE_TIMEOUT: float = 300.0
    #: plugin ids (author/name), comma-separated, started with the daemon and never stopped for
    #: idleness; "*" = every installed plugin
    PLUGIN_ALWAYS_ON: str = ""
    HTTP_PROXY: str = ""
    HTTPS_PROXY: str = ""
    NO_PROXY: str = ""

    # --- plugin interpreters and environment (local runtime) ----------------------------
    #: let uv download a managed Python when none here satisfies a plugin: never | automatic | manual
    UV_PYTHON_DOWNLOADS: Literal["never", "automatic", "manual"] = "never"
    #: extra variables for plugin processes: NAME (copied from the daemon's environment) or NAME=value
    PLUGIN_EXTRA_ENV: str = ""

    # --- backwards invocation ----------------------------------------------------------
    DIFY_INNER_API_URL: str = "http://127.0.0.1:5001"
    DIFY_INNER_API_KEY: str = ""
    DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT: int = 240_000
    DIFY_BACKWARDS_INVOCATION_WRITE_TIMEOUT: int = 5_000
    PERSISTENCE_STORAGE_MAX_SIZE: int = 100 * MiB

    # --- debug runtime -----------------------------------------------------------------
    PLUGIN_REMOTE_INSTALLING_ENABLED: bool = True
    PLUGIN_REMOTE_INSTALLING_HOST: str = "127.0.0.1"
    PLUGIN_REMOTE_INSTALLING_PORT: int = 5003
    PLUGIN_REMOTE_INSTALLING_MAX_CONN: int = 256
    PLUGIN_REMOTE_INSTALLING_MAX_SINGLE_TENANT_CONN: int = 5
    #: seconds a connecting plugin has to send its whole registration (key, declarations, assets)
    PLUGIN_REMOTE_INSTALLING_HANDSHAKE_TIMEOUT: float = 10.0
    #: seconds of silence after which a debugging connection is shown silent (see the block of #17)
    PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT: float = 60.0
    #: seconds a debugging key lives after it was last issued or used
    PLUGIN_REMOTE_INSTALLING_KEY_TTL: int = 2 * 60 * 60
    #: base64 bytes of assets one registration may carry
    PLUGIN_REMOTE_INSTALLING_MAX_ASSETS_SIZE: int = 50 * MiB
    #: invalid keys one address may try per window before all its attempts are refused
    PLUGIN_REMOTE_INSTALLING_MAX_FAILED_KEYS: int = 10
    PLUGIN_REMOTE_INSTALLING_FAILED_KEYS_WINDOW: float = 60.0

    # --- debugging plugins (#17): paused at a breakpoint, reloading ----------------------
    #: seconds a silent debugging connection (no heartbeat, TCP alive: a paused plugin) is kept
    PLUGIN_REMOTE_INSTALLING_SILENT_DROP_TIMEOUT: float = 3600.0
    #: seconds calls wait for a debugging plugin that closed its connection itself to register again
    PLUGIN_REMOTE_INSTALLING_RELOAD_GRACE: float = 5.0

    # --- input bounds: what one upload or one debugging connection may cost ---------------
    #: dependencies one bundle may list (each carried package is decoded once however often listed)
    MAX_BUNDLE_DEPENDENCIES: int = 256
    #: largest YAML file of a package or bundle that is parsed (manifest, providers, tools, models)
    MAX_PLUGIN_YAML_SIZE: int = 1 * MiB
    #: debugging connections one address may have open before their handshake (the oldest goes first)
    PLUGIN_REMOTE_INSTALLING_MAX_HANDSHAKES_PER_ADDRESS: int = 4
    #: seconds a new debugging connection has to send its handshake line (its key)
    PLUGIN_REMOTE_INSTALLING_HANDSHAKE_LINE_TIMEOUT: float = 3.0
    #: longest handshake line (bytes) read before the key is accepted
    PLUGIN_REMOTE_INSTALLING_HANDSHAKE_LINE_MAX_SIZE: int = 4096
    #: bytes all registrations being read may hold together; past it a registration is refused as busy
    PLUGIN_REMOTE_INSTALLING_MAX_REGISTERING_BYTES: int = 128 * MiB

    # --- serverless runtime ------------------------------------------------------------
    DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL: str = ""
    DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY: str = ""
    MAX_SERVERLESS_REQUEST_BYTES: int = 5 * MiB
    DIFY_PLUGIN_SERVERLESS_CONNECTOR_LAUNCH_TIMEOUT: int = 240
    #: retries after the first attempt, for a 502/503/429 or a refused connection before any frame
    MAX_SERVERLESS_RETRY_TIMES: int = 3
    SERVERLESS_RETRY_BACKOFF_MS: int = 500
    SERVERLESS_MAX_CONNECTIONS: int = 512
    #: HMAC-SHA256 key signing every invoke body (header X-Dify-Plugin-Signature); empty = unsigned
    DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET: str = ""
    MAX_SERVERLESS_TRANSACTION_BYTES: int = 6 * MiB
    MAX_SERVERLESS_TRANSACTION_TIMEOUT: int = 300
    # --- serverless callbacks: who may reach /backwards-invocation/transaction -----------
    #: source networks (CIDR, comma-separated) allowed to call the transaction route; empty = any
    SERVERLESS_TRANSACTION_ALLOWED_CIDRS: str = ""

    # --- plugin isolation (issue 13: what a local plugin process may reach) ------------
    #: auto: confine plugins with what the kernel offers; required: refuse to start one without complete
    #: isolation; off: confine nothing
    PLUGIN_ISOLATION: Literal["auto", "required", "off"] = "auto"
    #: uids (and gids) given to plugins, one per plugin id, when the daemon runs as root: "first-last"
    PLUGIN_ISOLATION_UID_RANGE: str = "100000-165535"
    #: more folders plugins may read, comma-separated (a shared model cache, say)
    PLUGIN_ISOLATION_READ_PATHS: str = ""
    #: index options and remote sources inside a package: "local" refuses them, "any" follows them (as Go)
    PLUGIN_PACKAGE_INDEX_OPTIONS: Literal["local", "any"] = "local"
    #: make the daemon non-dumpable so that processes of its uid cannot read its /proc entries or ptrace it
    DAEMON_NON_DUMPABLE: bool = True

    # --- HTTP connection limits and shutdown (names after Go's http.Server fields) --------
    #: seconds a client has to send a request's headers, from its first byte (or from the connection)
    SERVER_READ_HEADER_TIMEOUT: float = 10.0
    #: seconds a client has to send a whole request, headers and body
    SERVER_READ_TIMEOUT: float = 60.0
    #: seconds a keep-alive connection may wait idle for its next request
    SERVER_IDLE_TIMEOUT: float = 60.0
    #: requests served at once; past it a request is answered 503 at once; 0 = no cap
    SERVER_MAX_CONCURRENT_REQUESTS: int = 1024
    #: seconds calls in flight may take to finish after SIGTERM, before they are ended with an error
    SERVER_SHUTDOWN_GRACE_PERIOD: float = 5.0

    # --- logging and observability (dropin: Go's names and meanings) --------------------
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARN", "WARNING", "ERROR"] = "INFO"
    #: "text" (one line per record, never wrapped) or "json" (one JSON object per line)
    LOG_OUTPUT_FORMAT: Literal["text", "json"] = "text"
    #: also append the log to this file (created 0600, its folder 0700), as Go does
    LOG_FILE: Path | None = None
    # --- access log (operate) -------------------------------------------------------------
    #: log one line per HTTP request (client, method, path, status, bytes, ms) as plugin_daemon.access
    ACCESS_LOG: bool = False

    #: serve Go's Prometheus metrics at /metrics (no key, as Go)
    PROMETHEUS_ENABLED: bool = True
    #: Go's legacy name for PLUGIN_RUNTIME_MAX_BUFFER_SIZE; wins when set to anything but 5 MiB
    PLUGIN_STDIO_MAX_BUFFER_SIZE: int = 5 * MiB

    @field_validator("LOG_LEVEL", "LOG_OUTPUT_FORMAT", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        if info.field_name == "LOG_LEVEL":
            level = value.strip().upper()
            return "WARNING" if level == "WARN" else level  # Go's WARN is logging's WARNING
        return value.strip().lower()

    @field_validator("PLUGIN_STORAGE_TYPE")
    @classmethod
    def _only_local_storage(cls, value: str) -> str:
        if value != "local":
            raise ValueError(f"{value!r} is not supported: only local storage (a folder, PLUGIN_STORAGE_LOCAL_ROOT)")
        return value

    @field_validator("LOG_FILE", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _go_rules(self) -> Settings:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):  # Go falls back to the lowercase names
            if not getattr(self, name) and os.environ.get(name.lower()):
                object.__setattr__(self, name, os.environ[name.lower()])
        if self.PLUGIN_STDIO_MAX_BUFFER_SIZE not in (5 * MiB, 0):  # Go's GetLocalRuntimeMaxBufferSize
            object.__setattr__(self, "PLUGIN_RUNTIME_MAX_BUFFER_SIZE", self.PLUGIN_STDIO_MAX_BUFFER_SIZE)
        for name in STORAGE_KEYS:
            if not self._storage_key(getattr(self, name)).is_relative_to(self.home):
                raise ValueError(f"{name} must stay inside the storage root {self.home}")
        return self

    @field_validator("SERVERLESS_TRANSACTION_ALLOWED_CIDRS")
    @classmethod
    def _cidr_list(cls, value: str) -> str:
        parse_networks(value)
        return value

    @cached_property
    def transaction_networks(self) -> tuple[IPNetwork, ...]:
        """SERVERLESS_TRANSACTION_ALLOWED_CIDRS, parsed (empty: any source)."""
        return parse_networks(self.SERVERLESS_TRANSACTION_ALLOWED_CIDRS)

    @field_validator("SERVER_KEY")
    @classmethod
    def _strip_key(cls, value: str) -> str:
        return value.strip()

    # --- derived paths (dropin: resolved as Go lays them out) ---------------------------
    @cached_property
    def home(self) -> Path:
        """The storage root: everything the daemon writes lives below it (unless an absolute
        PLUGIN_WORKING_PATH or LOG_FILE says otherwise)."""
        return (self.PLUGIN_STORAGE_LOCAL_ROOT or self.PLUGIN_DAEMON_HOME).resolve()

    def _storage_key(self, key: Path) -> Path:
        # Go's local storage joins every key onto its root, a leading "/" included.
        return (self.home / str(key).lstrip("/")).resolve()

    @property
    def working_path(self) -> Path:
        return (self.home / self.PLUGIN_WORKING_PATH).resolve()

    @property
    def installed_path(self) -> Path:
        return self._storage_key(self.PLUGIN_INSTALLED_PATH)

    @property
    def package_path(self) -> Path:
        return self._storage_key(self.PLUGIN_PACKAGE_CACHE_PATH)

    @property
    def media_path(self) -> Path:
        return self._storage_key(self.PLUGIN_MEDIA_CACHE_PATH)

    @property
    def persistence_path(self) -> Path:
        return self._storage_key(self.PERSISTENCE_STORAGE_PATH)

    @property
    def install_timeout_seconds(self) -> float:
        return self.PLUGIN_INSTALL_TIMEOUT * 60.0

    @property
    def database_url(self) -> str:
        if self.DATABASE_URL:
            return self.DATABASE_URL
        if self.DB_TYPE in ("postgresql", "pgbouncer"):
            query: dict[str, str] = {"sslmode": self.DB_SSL_MODE}
            if self.DB_CHARSET:
                query["client_encoding"] = self.DB_CHARSET
            if self.DB_EXTRAS:
                query["options"] = self.DB_EXTRAS.removeprefix("options=")
            return self._server_url("postgresql+psycopg", 5432, query)
        if self.DB_TYPE == "mysql":
            options = {"charset": self.DB_CHARSET or "utf8mb4"}
            if self.DB_SSL_MODE == "require":
                options["ssl_check_hostname"] = "true"
            return self._server_url("mysql+pymysql", 3306, options)
        return f"sqlite:///{self.home / 'plugin_daemon.db'}"

    def _server_url(self, driver: str, default_port: int, query: dict[str, str]) -> str:
        url = URL.create(
            driver,
            username=self.DB_USERNAME,
            password=self.DB_PASSWORD or None,
            host=self.DB_HOST,
            port=self.DB_PORT or default_port,
            database=self.DB_DATABASE,
            query=query,
        )
        return url.render_as_string(hide_password=False)

    @property
    def always_on_plugins(self) -> set[str]:
        return {name.strip() for name in self.PLUGIN_ALWAYS_ON.split(",") if name.strip()}

    @property
    def disabled_extensions(self) -> set[str]:
        return {name.strip() for name in self.DISABLED_EXTENSIONS.split(",") if name.strip()}

    def ensure_server_key(self) -> str | None:
        """Refuse a public key; generate one if none is set. Returns the generated key, if any."""
        if self.SERVER_KEY in PUBLIC_DEFAULT_KEYS and not self.ALLOW_PUBLIC_SERVER_KEY:
            raise ValueError(
                "SERVER_KEY is a publicly known default; set a secret key "
                "(or ALLOW_PUBLIC_SERVER_KEY=true for a throwaway setup)"
            )
        if self.SERVER_KEY:
            return None
        generated = secrets.token_urlsafe(32)
        object.__setattr__(self, "SERVER_KEY", generated)
        return generated

    def ensure_directories(self) -> None:
        paths = (self.home, self.working_path, self.installed_path, self.package_path, self.media_path)
        for path in (*paths, self.persistence_path):
            path.mkdir(parents=True, exist_ok=True)


class SettingsError(ValueError):
    """A setting that failed validation: one line that names it, no traceback."""


def describe_invalid(error: ValidationError) -> str:
    """One line per invalid setting: ``invalid setting NAME: reason`` (values are not shown:
    they may be secrets)."""
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"])
        reason = item["msg"].removeprefix("Value error, ")
        lines.append(f"invalid setting {name}: {reason}" if name else f"invalid settings: {reason}")
    return "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and ``.env``, with explicit overrides on top.

    Raises :class:`SettingsError` (one line naming the setting) when a value is invalid.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_invalid(exc)) from None
