"""Reading a YAML configuration file with errors that name the file (one place for every loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from herald.errors import ConfigError


def read_yaml(path: Path | str, what: str) -> Any:
    """The parsed document; ConfigError ``<path>: cannot read <what>: …`` or ``<path>: not valid YAML: …``."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
