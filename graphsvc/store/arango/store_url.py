"""Connection settings from a store URL: `arangodb://user@host:8529/db` (HTTP) or
`arangodbs://…` (HTTPS, certificates verified; `GRAPHSVC_ARANGO_CA_FILE` names a CA bundle,
`?verify=false` turns verification off, explicitly); several coordinators as
`arangodb://user@h1:8529,h2:8529/db`. The password comes from `--password-file` or
`ARANGO_PASSWORD`, never from the URL."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from graphsvc.errors import ConfigError
from graphsvc.settings import ARANGO_CA_FILE, read

SCHEMES = {"arangodb": "http", "arangodbs": "https"}
DEFAULT_PORT = 8529
PASSWORD_VARIABLE = "ARANGO_PASSWORD"

_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-_]*)(?::(\d{1,5}))?")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


@dataclass(frozen=True)
class ArangoSettings:
    """Where and as whom to connect, from a store URL (the password never in repr)."""

    hosts: tuple[str, ...]
    database: str
    username: str
    password: str = field(repr=False)
    verify: bool | str = True  # HTTPS only: True, False, or the path of a CA bundle

    @property
    def tls(self) -> bool:
        return self.hosts[0].startswith("https://")


def parse_store_url(
    url: str, password_file: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> ArangoSettings:
    """Connection settings from `arangodb[s]://[user@]host[:port][,host2…][/database][?verify=false]`.

    The password comes from `password_file` (first line break stripped) or else from
    `ARANGO_PASSWORD`; a URL carrying one raises ConfigError, as do unknown options and
    a CA bundle (`GRAPHSVC_ARANGO_CA_FILE`) that does not exist."""
    environ = os.environ if environ is None else environ
    scheme, separator, _ = url.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        raise ConfigError(f"'{redacted(url)}' is not an ArangoDB URL — use arangodb://user@host:8529/database")
    protocol = SCHEMES[scheme.lower()]
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"malformed ArangoDB URL '{redacted(url)}': {exc}") from None
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    if ":" in userinfo:
        raise ConfigError(
            f"the store URL '{redacted(url)}' contains a password — remove it and set "
            f"{PASSWORD_VARIABLE} or pass --password-file (a URL ends up in shell history and process lists)"
        )
    username = unquote(userinfo) or "root"
    if not hostlist:
        raise ConfigError(f"no host in the store URL '{url}' — use arangodb://user@host:8529/database")
    hosts = []
    for host in hostlist.split(","):
        match = _HOST.fullmatch(host)
        if match is None or (match.group(2) and not 0 < int(match.group(2)) < 65536):
            raise ConfigError(f"bad host '{host}' in the store URL '{url}' — use host or host:port")
        hosts.append(f"{protocol}://{match.group(1)}:{match.group(2) or DEFAULT_PORT}")
    database = unquote(parts.path.strip("/")) or "_system"
    if "/" in database:
        raise ConfigError(f"the store URL '{url}' names more than a database after the host: '{database}'")

    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - {"verify"})
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in the store URL '{url}' (known: verify)")
    verify: bool | str = True
    if "verify" in options:
        if protocol != "https":
            raise ConfigError(f"'verify' applies to arangodbs:// (TLS) URLs only, not '{url}'")
        text = options["verify"][-1].lower()
        if text not in _TRUE | _FALSE:
            raise ConfigError(f"verify={options['verify'][-1]} in '{url}': use verify=true or verify=false")
        verify = text in _TRUE
    ca_file = read(ARANGO_CA_FILE, environ) or ""
    if protocol == "https" and verify is True and ca_file:
        if not Path(ca_file).is_file():
            raise ConfigError(f"{ARANGO_CA_FILE}={ca_file}: no such file")
        verify = ca_file

    if password_file is not None:
        try:
            password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the password file {password_file}: {exc.strerror or exc}") from None
    else:
        password = environ.get(PASSWORD_VARIABLE, "")
    return ArangoSettings(tuple(hosts), database, username, password, verify)


def redacted(url: str) -> str:
    """The URL with any password in it replaced, for messages."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
