"""The `IMAGEMATCH_*` environment that makes the `imagematch` CLI, run as a subprocess or through CliRunner, build
the same Settings as the test or benchmark that starts it."""

from __future__ import annotations

from pathlib import Path

from imagematch.settings import ENV_PREFIX, Settings

SettingValue = str | int | float | bool | Path | tuple[str, ...]


def _as_text(value: SettingValue) -> str:
    """A value as the environment spells it: booleans in lower case, lists comma-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def env_for(settings: Settings, **overrides: SettingValue) -> dict[str, str]:
    """IMAGEMATCH_<NAME> for every setting given explicitly to `settings` (the rest keep their defaults in the
    child too), then for each override, by setting name. Only these variables: callers add os.environ."""
    unknown = set(overrides) - set(Settings.model_fields)
    if unknown:
        raise ValueError(f"no such settings: {sorted(unknown)}")
    given = settings.model_fields_set
    values: dict[str, SettingValue | None] = {
        name: getattr(settings, name) for name in Settings.model_fields if name in given
    }
    values.update(overrides)
    return {f"{ENV_PREFIX}{name.upper()}": _as_text(value) for name, value in values.items() if value is not None}
