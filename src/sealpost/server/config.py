"""Server configuration: one frozen dataclass, filled from defaults, a TOML file, the
environment and command-line flags, in that order of increasing precedence.

Every field can be set in all three places, under one derived name, so documentation and
behaviour cannot drift apart:

=========================  ==============================  ==========================
TOML key (``[server]``)    environment variable            flag
=========================  ==============================  ==========================
``max_queue_depth``        ``SEALPOST_MAX_QUEUE_DEPTH``    ``--max-queue-depth``
=========================  ==============================  ==========================

Every limit a client can push against lives here with its reason beside it; all sizes are
bytes, all durations seconds. A rate limit of 0 switches that limit off (benchmarks).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["REGISTRATION_MODES", "ConfigError", "ServerConfig", "load_config"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
HOUR = 3600
DAY = 24 * HOUR


#: ``registration``: who may create an account.
REGISTRATION_MODES = ("open", "invite", "closed")


class ConfigError(Exception):
    """A configuration value is missing, of the wrong type or out of range."""


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _frame_needed(config: ServerConfig) -> int:
    """A WebSocket send frame: the envelopes in base64 plus about 128 bytes of JSON each."""
    return -(-config.max_message_request // 3) * 4 + config.max_envelopes * 128 + 1024


def _multi_frame_needed(config: ServerConfig) -> int:
    """A ``send_multi`` frame: the body or shared part (an envelope) in base64 and about
    110 bytes of JSON per recipient device (account hex, device id and, in the legacy
    form, a 48-byte wrap in base64)."""
    return -(-config.max_envelope // 3) * 4 + config.max_multi_recipients * 112 + 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data: Path = field(metadata=_doc("data directory: database, server key, blobs"))
    host: str = field(default="127.0.0.1", metadata=_doc("address to listen on"))
    port: int = field(default=8765, metadata=_doc("TCP port (0 picks a free one)"))
    tls_cert: str = field(default="", metadata=_doc("PEM certificate chain for direct HTTPS"))
    tls_key: str = field(default="", metadata=_doc("PEM private key for direct HTTPS"))
    log_level: str = field(default="info", metadata=_doc("debug, info, warning or error"))
    forwarded_allow_ips: str = field(
        default="",
        metadata=_doc("reverse proxies whose X-Forwarded-For is trusted (comma separated)"),
    )
    # -- who may register (docs/OPERATIONS.md, "Registration and invites")
    registration: str = field(
        default="open",
        metadata=_doc(
            "who may register: open (anyone), invite (with a code from sealpost admin"
            " invite create) or closed (nobody new)"
        ),
    )
    username_quarantine: int = field(
        default=30 * DAY,
        metadata=_doc(
            "seconds a removed account's username stays unregistrable (sealpost admin"
            " accounts remove), so no one else can take it over at once"
        ),
    )
    # -- several processes (docs/OPERATIONS.md, "Several processes")
    database: str = field(
        default="",
        metadata=_doc("PostgreSQL URL postgresql://USER@HOST/DB (default: SQLite in the data dir)"),
    )
    redis: str = field(
        default="",
        metadata=_doc("Redis URL redis://HOST:6379/0: wake-ups between processes (needs database)"),
    )
    poll_interval: float = field(
        default=5.0,
        metadata=_doc("with redis: seconds between queue checks of a connected device"),
    )
    # -- retention
    message_ttl: int = field(
        default=30 * DAY, metadata=_doc("undelivered messages are deleted after this")
    )
    attachment_ttl: int = field(default=30 * DAY, metadata=_doc("attachments expire after this"))
    purge_interval: int = field(default=60, metadata=_doc("how often expired data is purged"))
    log_head_interval: int = field(
        default=1, metadata=_doc("seconds between signed tree heads while the log grows")
    )
    # -- sizes (Signal's limits: 96 KiB per envelope, 256 KiB per multi-recipient request)
    max_message_request: int = field(
        default=256 * KiB, metadata=_doc("largest PUT /v1/messages body")
    )
    max_envelope: int = field(default=96 * KiB, metadata=_doc("largest single envelope body"))
    max_envelopes: int = field(
        default=128, metadata=_doc("envelopes in one send (devices of recipient and self)")
    )
    max_request: int = field(
        default=512 * KiB, metadata=_doc("largest body of any other JSON request")
    )
    max_multi_recipients: int = field(
        default=2000, metadata=_doc("recipient devices of one multi-recipient (group) send")
    )
    max_devices: int = field(default=5, metadata=_doc("devices one account may have"))
    link_ttl: int = field(default=600, metadata=_doc("seconds a device-link channel stays open"))
    max_link_channels: int = field(
        default=1000, metadata=_doc("device-link channels one process holds open at once")
    )
    max_prekeys: int = field(default=200, metadata=_doc("prekeys of each kind in one upload"))
    max_prekey_stock: int = field(
        default=1000, metadata=_doc("one-time prekeys of each kind a device may hold")
    )
    prekey_refill_below: int = field(
        default=20, metadata=_doc("stock under which a device is told to refill")
    )
    max_frame: int = field(
        default=384 * KiB,
        metadata=_doc("largest WebSocket frame from a client (holds a base64 send)"),
    )
    max_queue_depth: int = field(default=10_000, metadata=_doc("queued messages per device"))
    # 100 MiB of plaintext (sealpost.protocol.attachment.MAX_ATTACHMENT_SIZE) plus the
    # encryption's overhead: a 22-byte header and 16 bytes a chunk, at most 25,638 bytes.
    max_attachment: int = field(
        default=100 * MiB + 64 * KiB, metadata=_doc("largest attachment (encrypted blob)")
    )
    fetch_batch: int = field(default=100, metadata=_doc("messages per GET /v1/messages page"))
    # -- rates, per minute
    rate_per_account: int = field(
        default=1200, metadata=_doc("authenticated requests per account per minute")
    )
    rate_per_address: int = field(
        default=2400, metadata=_doc("requests per client address per minute")
    )
    rate_sealed_per_address: int = field(
        default=600,
        metadata=_doc("sealed sends without delivery token per address per minute"),
    )
    rate_auth_failures_per_address: int = field(
        default=60,
        metadata=_doc(
            "failed request authentications per client address per minute (then 429 before"
            " any check), so forged signatures cost their sender, never the account named"
        ),
    )
    rate_invite_failures_per_address: int = field(
        default=10,
        metadata=_doc(
            "registrations with a wrong invite code per client address per minute (then"
            " 429), so codes cannot be guessed"
        ),
    )
    # -- abuse quotas (in memory, per client address; windows in seconds)
    sealed_quota_messages: int = field(
        default=1000,
        metadata=_doc(
            "messages one client address may queue for one account without a delivery token"
            " per sealed_quota_window, so a stranger cannot fill an open account's queue"
        ),
    )
    sealed_quota_bytes: int = field(
        default=32 * MiB,
        metadata=_doc("bytes of the same, per client address and recipient account"),
    )
    sealed_bytes_per_address: int = field(
        default=512 * MiB,
        metadata=_doc(
            "bytes of sealed sends one client address may store per sealed_quota_window,"
            " whatever the recipients (a multi-recipient send counts its body once)"
        ),
    )
    sealed_quota_window: int = field(
        default=HOUR, metadata=_doc("seconds in which the sealed quotas refill")
    )
    bundles_per_target: int = field(
        default=30,
        metadata=_doc(
            "one-time prekeys handed out per target device per hour; past it bundles carry"
            " none (the signed and last-resort keys still start sessions)"
        ),
    )
    bundles_per_address: int = field(
        default=600, metadata=_doc("prekey bundle fetches per client address per hour")
    )
    link_channels_per_address: int = field(
        default=3, metadata=_doc("device-link channels one client address may hold open")
    )
    link_key_ttl: int = field(
        default=180,
        metadata=_doc(
            "seconds a device-link channel lives until its key is fetched (then link_ttl)"
        ),
    )
    # -- storage quotas
    max_queue_bytes: int = field(
        default=128 * MiB,
        metadata=_doc("bytes queued per device (then 507 queue_full); 0 switches it off"),
    )
    max_attachment_bytes_per_account: int = field(
        default=2 * GiB,
        metadata=_doc(
            "bytes of unexpired attachments one account may have uploaded (then 507"
            " attachment_quota); 0 switches it off"
        ),
    )
    min_free_disk: int = field(
        default=512 * MiB,
        metadata=_doc(
            "free bytes on the data directory's disk below which new data is refused"
            " (507 insufficient_storage); reads, acks and deletes still work"
        ),
    )
    # -- connections
    max_connections: int = field(
        default=4000,
        metadata=_doc(
            "open connections (HTTP and WebSocket) before new ones get 503; keep it under"
            " the process's file descriptor limit (ulimit -n)"
        ),
    )
    header_timeout: float = field(
        default=10.0, metadata=_doc("seconds a connection has to send a request's headers")
    )
    body_timeout: float = field(
        default=30.0,
        metadata=_doc("seconds a JSON request body may take to arrive (then 408, closed)"),
    )
    upload_timeout: float = field(
        default=900.0,
        metadata=_doc("seconds an attachment upload may take (100 MiB at about 1 Mbit/s)"),
    )
    sealed_idle_timeout: float = field(
        default=120.0,
        metadata=_doc("seconds a /v1/sealed socket may stay without a frame (then 4408)"),
    )
    max_sockets_per_address: int = field(
        default=32,
        metadata=_doc("open /v1/sealed and /v1/link sockets per client address (then 403)"),
    )
    # -- authentication
    auth_window: int = field(
        default=300, metadata=_doc("request timestamps may differ from the clock by this")
    )
    auth_handshake_timeout: float = field(
        default=10.0, metadata=_doc("seconds a WebSocket has to answer its challenge")
    )
    sender_certificate_ttl: int = field(
        default=DAY, metadata=_doc("lifetime of issued sender certificates")
    )

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def validate(self) -> ServerConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key must be given together")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.registration not in REGISTRATION_MODES:
            raise ConfigError(
                f"registration must be open, invite or closed, got {self.registration}"
            )
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"log_level must be debug, info, warning or error, got {self.log_level}"
            )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{f.name} must not be negative")
        if self.max_frame < _frame_needed(self):
            raise ConfigError(
                f"max_frame must be at least {_frame_needed(self)} to carry a send of "
                "max_message_request bytes in base64"
            )
        if self.max_frame < _multi_frame_needed(self):
            raise ConfigError(
                f"max_frame must be at least {_multi_frame_needed(self)} to carry a "
                "multi-recipient send to max_multi_recipients devices"
            )
        if self.database and not self.database.startswith(("postgresql://", "postgres://")):
            raise ConfigError("database must be a postgresql:// URL")
        if self.redis and not self.redis.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("redis must be a redis://, rediss:// or unix:// URL")
        if self.redis and not self.database:
            raise ConfigError("redis needs database: a SQLite database serves one process")
        if self.redis and self.poll_interval <= 0:
            raise ConfigError("poll_interval must be positive")
        if self.max_devices < 1:
            raise ConfigError("max_devices must be at least 1")
        if self.max_envelope > self.max_message_request:
            raise ConfigError("max_envelope must not exceed max_message_request")
        if self.max_queue_bytes and self.max_queue_bytes < self.max_envelope:
            raise ConfigError("max_queue_bytes must be 0 (off) or at least max_envelope")
        for name in ("sealed_quota_bytes", "sealed_bytes_per_address"):
            value = getattr(self, name)
            if value and value < self.max_message_request:
                raise ConfigError(f"{name} must be 0 (off) or at least max_message_request")
        if self.sealed_quota_window < 1:
            raise ConfigError("sealed_quota_window must be at least 1")
        return self


def _field_types() -> dict[str, type]:
    types: dict[str, type] = {}
    for f in dataclasses.fields(ServerConfig):
        default = f.default
        types[f.name] = Path if f.name == "data" else type(default)
    return types


FIELD_TYPES: dict[str, type] = _field_types()


def env_name(name: str) -> str:
    return "SEALPOST_" + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_doc(name: str) -> str:
    for f in dataclasses.fields(ServerConfig):
        if f.name == name:
            return str(f.metadata.get("doc", ""))
    raise KeyError(name)


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = FIELD_TYPES[name]
    try:
        if kind is Path:
            if not isinstance(value, str | Path) or not str(value):
                raise TypeError
            return Path(value)
        if kind is int:
            if isinstance(value, bool | float):
                raise TypeError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{name} from {source}: expected {kind.__name__}") from None


def load_config(
    *,
    config_file: Path | None,
    environ: Mapping[str, str],
    flags: Mapping[str, Any],
) -> ServerConfig:
    """Merge defaults < TOML file < environment < flags (``None`` flags are unset)."""
    values: dict[str, Any] = {}
    if config_file is None and environ.get("SEALPOST_CONFIG"):
        config_file = Path(environ["SEALPOST_CONFIG"])
    if config_file is not None:
        try:
            with config_file.open("rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from None
        table = doc.get("server", doc)
        if not isinstance(table, dict):
            raise ConfigError(f"config file {config_file}: [server] must be a table")
        for key, value in table.items():
            if key not in FIELD_TYPES:
                raise ConfigError(f"config file {config_file}: unknown setting {key!r}")
            values[key] = _coerce(key, value, str(config_file))
    for name in FIELD_TYPES:
        env = env_name(name)
        if env in environ:
            values[name] = _coerce(name, environ[env], env)
    for name, value in flags.items():
        if value is not None:
            values[name] = _coerce(name, value, flag_name(name))
    if "data" not in values:
        raise ConfigError("no data directory: pass --data DIR or set SEALPOST_DATA")
    return ServerConfig(**values).validate()
