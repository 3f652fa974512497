"""Where the providers are: an endpoints file (JSON or YAML) read into adapters.

The file maps provider names to ``{channel, host, port, url}`` under ``endpoints`` (the local
providers' ready file has exactly that shape), or is that mapping itself::

    endpoints:
      smtp-primary: {channel: EMAIL, host: smtp.example.net, port: 587}
      sms-primary: {channel: SMS, url: "https://sms.example.net"}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from herald.errors import ConfigError
from herald.yaml_files import read_yaml
from providers.base import ProviderAdapter
from providers.sms_http import HttpSmsAdapter
from providers.smtp import SmtpAdapter


def load_endpoints(path: Path) -> dict[str, dict[str, Any]]:
    """The endpoints a file names; ConfigError naming the file, provider and field when one is wrong."""
    data = read_yaml(path, "provider endpoints")  # JSON is YAML
    if isinstance(data, Mapping) and "endpoints" in data:
        data = data["endpoints"]
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{path}: endpoints: expected a mapping of provider name to endpoint")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in data.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{path}: endpoints.{name}: expected a mapping")
        channel = spec.get("channel")
        if channel == "EMAIL":
            if not spec.get("host") or not isinstance(spec.get("port"), int):
                raise ConfigError(f"{path}: endpoints.{name}: an EMAIL provider needs host and port")
        elif channel == "SMS":
            if not str(spec.get("url", "")).startswith(("http://", "https://")):
                raise ConfigError(f"{path}: endpoints.{name}.url: an SMS provider needs an http(s) URL")
        else:
            raise ConfigError(f"{path}: endpoints.{name}.channel: {channel!r} is not EMAIL or SMS")
        out[str(name)] = dict(spec)
    return out


def adapters_for(
    endpoints: Mapping[str, Mapping[str, Any]], timeout_s: float = 10.0
) -> dict[str, ProviderAdapter]:
    """An adapter per endpoint."""
    adapters: dict[str, ProviderAdapter] = {}
    for name, spec in endpoints.items():
        if spec["channel"] == "EMAIL":
            adapters[name] = SmtpAdapter(name, spec["host"], int(spec["port"]), timeout_s)
        else:
            adapters[name] = HttpSmsAdapter(name, spec["url"], timeout_s)
    return adapters
