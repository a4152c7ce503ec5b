"""Read, validate and update config.ini (a Medusa-compatible configobj file).

`load_config` turns the file into a `Settings`; `write_settings` changes a few keys
in place. Writes patch only the lines of the keys they change (inipatch.py), so
every comment, every other line and the key order stay byte-for-byte as they were;
configobj still parses the result, and a write whose result would read back
differently from what was asked is refused. Each key's section, type and default
come from the table in settings.py (`KEYS`).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from configobj import ConfigObj, ConfigObjError, DuplicateError, Section, flatten_errors
from validate import Validator

from medusa_v2.configkey import Key
from medusa_v2.inipatch import KEY_LINE, Value, patched
from medusa_v2.passwords import is_hashed
from medusa_v2.settings import KEYS, Settings, SettingsError, key_of

try:
    import fcntl
except ImportError:  # Windows: writers are not serialised, the rename is still atomic
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CONFIGSPEC",
    "ConfigError",
    "configspec",
    "default_config_path",
    "load_config",
    "read_own_sections",
    "write_settings",
]

# The spec gives each key's type and default, from the table (settings.KEYS); ranges
# and formats are checked once, by Settings, so an embedder that builds Settings
# directly gets the same rules.
_SPEC_TYPES: dict[type, str] = {str: "string", bool: "boolean", int: "integer", float: "float", tuple: "force_list"}


def configspec(keys: tuple[Key, ...]) -> str:
    """Return the configobj spec of `keys` (a `[section]` line, then `name = type(default=...)` lines)."""
    lines: list[str] = []
    for section in dict.fromkeys(spec.section for spec in keys):
        lines += [""] if lines else []
        lines.append(f"[{section}]")
        lines += [f"{spec.name} = {_spec_check(spec)}" for spec in keys if spec.section == section]
    return "\n".join(lines) + "\n"


def _spec_check(spec: Key) -> str:
    default = spec.default
    text = f"list({', '.join(map(repr, default))})" if spec.type is tuple else repr(default)
    return f"{_SPEC_TYPES[spec.type]}(default={text})"


CONFIGSPEC = configspec(KEYS)
# Our own sections, which a host that owns config.ini (Medusa) leaves to us.
_OWN_KEYS = tuple(spec for spec in KEYS if spec.section != "General")
# Keys whose values never appear in an error message.
_SECRET = frozenset((spec.section, spec.name) for spec in KEYS if spec.secret)
_GENERATED_SECRETS: dict[str, Callable[[], str]] = {
    "api_key": lambda: secrets.token_hex(16),  # 32 hex digits, like Medusa's
    "encryption_secret": lambda: secrets.token_hex(32),
}
_TYPE_PROBLEMS = {
    "integer": "is not an integer",
    "float": "is not a number",
    "boolean": "is not a boolean (use 1/0 or true/false)",
    "string": "is a list: quote the value if it contains a comma",
}


class ConfigError(Exception):
    """config.ini cannot be used; str() is one line naming the file and the key."""

    def __init__(self, path: str, problem: str, section: str | None = None, key: str | None = None):
        where = f"[{section}] {key}: " if section and key else f"[{section}]: " if section else ""
        super().__init__(f"{path}: {where}{problem}")
        self.path, self.section, self.key, self.problem = path, section, key, problem


def default_config_path() -> str:
    """Return $MEDUSA_V2_CONFIG when set, else conf/config.ini."""
    return os.environ.get("MEDUSA_V2_CONFIG") or "conf/config.ini"


# -- reading --------------------------------------------------------------------------


def _read_bytes(path: str, label: str) -> bytes | None:
    """Return the file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(label, f"cannot read the file: {exc.strerror or exc}") from None


def _parse(data: bytes, label: str, configspec: list[str] | None = None) -> ConfigObj:
    """Parse config.ini text; list values on, interpolation off (values are literal)."""
    try:
        return ConfigObj(
            io.BytesIO(data), configspec=configspec, encoding="utf-8", interpolation=False, raise_errors=True
        )
    except UnicodeDecodeError:
        raise ConfigError(label, "the file is not valid UTF-8") from None
    except ConfigObjError as exc:
        raise ConfigError(label, _parse_problem(exc)) from None


def _parse_problem(exc: ConfigObjError) -> str:
    # configobj's messages can quote a whole line, which may hold a secret: rebuild them.
    line_text = getattr(exc, "line", "") or ""
    where = f"line {getattr(exc, 'line_number', '?')}"
    key = KEY_LINE.match(line_text)
    if isinstance(exc, DuplicateError):
        if key:
            return f"{where}: duplicate key {key.group(2).strip()!r}"
        return f"{where}: duplicate section {line_text.strip()!r}"
    if key:
        return f"{where}: {key.group(2).strip()}: cannot parse the value (check its quotes)"
    return f"{where}: neither a [section] nor a key = value line"


def _check_structure(cfg: ConfigObj, spec: ConfigObj, label: str) -> None:
    """Refuse a section given as a value and a value given as a sub-section.

    configobj's validate() crashes on the second, so both are caught beforehand.
    """
    for section_name in spec.sections:
        if section_name not in cfg:
            continue
        section = cfg[section_name]
        if not isinstance(section, Section):
            raise ConfigError(label, f"[{section_name}] must be a section, not a key = value")
        for key in spec[section_name].scalars:
            if key in section.sections:
                raise ConfigError(label, "must be a value, not a sub-section", section_name, key)


def _validate(cfg: ConfigObj, label: str) -> None:
    """Apply CONFIGSPEC: convert types in place, fill defaults, raise the first error."""
    _check_structure(cfg, cfg.configspec, label)
    result = cfg.validate(Validator(), preserve_errors=True)
    if result is True:
        return
    for sections, key, error in flatten_errors(cfg, result):
        section = sections[0] if sections else None
        if key is None or not error:
            continue
        check = cfg.configspec[section][key].split("(", 1)[0]
        problem = _TYPE_PROBLEMS.get(check, "has an invalid value")
        if (section, key) in _SECRET:
            raise ConfigError(label, problem.replace("is a list", "the value is a list"), section, key)
        raise ConfigError(label, f"{_shown(cfg[section][key])} {problem}", section, key)
    raise ConfigError(label, "does not match the expected structure")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- building Settings ------------------------------------------------------------------


def _resolve(directory: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(directory, path))


def _database_url(url: str, directory: str) -> str:
    """Fill the default database and anchor `sqlite:relative/path` at the config directory."""
    if not url:
        return "sqlite:///" + _resolve(directory, "medusa_v2.db")
    if url.startswith("sqlite:") and not url.startswith("sqlite:/"):
        relative = url[len("sqlite:") :]
        if relative == ":memory:":
            return "sqlite:///:memory:"
        if relative:
            return "sqlite:///" + _resolve(directory, relative)
    return url


def _values(cfg: ConfigObj, keys: tuple[Key, ...]) -> dict[str, Any]:
    """Return the validated values of `keys` as Settings fields."""
    values = {spec.field: cfg[spec.section][spec.name] for spec in keys}
    for spec in keys:
        if spec.type is tuple:
            # `key =` and `key = ""` read as [""]: both mean an empty list.
            values[spec.field] = tuple(item.strip() for item in values[spec.field] if item.strip())
    return values


def _field_values(cfg: ConfigObj, directory: str) -> dict[str, Any]:
    values = _values(cfg, KEYS)
    values["https_cert"] = _resolve(directory, values["https_cert"])
    values["https_key"] = _resolve(directory, values["https_key"])
    values["database_url"] = _database_url(values["database_url"], directory)
    return values


def _check_medusa_encryption(cfg: ConfigObj, label: str) -> None:
    # Medusa encrypts password keys when encryption_version is non-zero; such a value
    # would be compared as plain text and no login could ever succeed.
    version = str(cfg["General"].get("encryption_version", "0")).strip()
    password = cfg["General"]["web_password"]
    if version not in ("", "0") and password and not is_hashed(password):
        raise ConfigError(
            label,
            f"stored encrypted by Medusa (encryption_version = {version}), which medusa_v2 "
            "cannot read; set it again with medusa-v2 set-password --config PATH",
            "General",
            "web_password",
        )


def _settings(values: dict[str, Any], label: str) -> Settings:
    try:
        return Settings(**values)
    except SettingsError as exc:
        spec = key_of(exc.field)
        section, name = (spec.section, spec.name) if spec else (None, exc.field)
        raise ConfigError(label, exc.problem, section, name) from None


def load_config(path: str | os.PathLike[str], *, write_back: bool = True, generate: bool = True) -> Settings:
    """Read, validate and normalise config.ini, generating missing secrets.

    An empty api_key or encryption_secret is generated (unless not `generate`: then
    it stays empty); with `write_back` it is saved into the file (created, mode 0600,
    when missing), otherwise it lives in memory only.
    Raise ConfigError, one line naming the file and the key, for anything invalid.
    """
    label = os.fspath(path)
    absolute = os.path.abspath(label)
    data = _read_bytes(absolute, label)
    if data is None and write_back:
        data = _create_from_sample(absolute, label)
    cfg = _parse(data or b"", label, CONFIGSPEC.splitlines())
    _validate(cfg, label)
    _check_medusa_encryption(cfg, label)
    values = _field_values(cfg, os.path.dirname(absolute))
    values["config_path"] = absolute
    missing = {key: make() for key, make in _GENERATED_SECRETS.items() if generate and not values[key]}
    settings = _settings(values, label)
    if missing and write_back:
        missing = _store_secrets(absolute, missing, label)
    return settings.replace(**missing) if missing else settings


def read_own_sections(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the Settings values of our own sections ([Database], [API]) of a host's config.ini.

    For a host that owns the file (Medusa): it is only read, never written, and its
    [General] keys are left to the host. A file that does not exist gives the
    defaults. Raise ConfigError naming the key for an invalid value of ours.
    """
    label = os.fspath(path)
    absolute = os.path.abspath(label)
    cfg = _parse(_read_bytes(absolute, label) or b"", label, configspec(_OWN_KEYS).splitlines())
    _validate(cfg, label)
    values = _values(cfg, _OWN_KEYS)
    if values["database_url"]:
        values["database_url"] = _database_url(values["database_url"], os.path.dirname(absolute))
    return values


SAMPLE_SUFFIX = ".sample"


def _create_from_sample(path: str, label: str) -> bytes | None:
    """Create a missing config.ini from the sample beside it (`config.ini.sample`); return its bytes.

    The sample is what a checkout tracks; the live file, with its generated secrets,
    is the server's own (mode 0600), so running the daemon never modifies a tracked
    file. Without a sample nothing is created here (the secrets' write creates it).
    """
    sample = _read_bytes(path + SAMPLE_SUFFIX, label + SAMPLE_SUFFIX)
    if sample is None:
        return None
    target = os.path.realpath(path)
    try:
        with _locked(os.path.dirname(target)) as directory_fd:
            current = _read_bytes(target, label)
            if current is not None:  # another process created it meanwhile
                return current
            _atomic_write(target, sample, directory_fd)
    except OSError as exc:
        raise ConfigError(label, f"cannot create the file: {exc.strerror or exc}") from None
    return sample


def _store_secrets(path: str, generated: dict[str, str], label: str) -> dict[str, str]:
    """Write generated secrets the file still lacks; return the secrets the file holds."""

    def still_empty(current: ConfigObj) -> dict[str, dict[str, str]]:
        # Another process may have written its own secrets since we read the file;
        # keeping those makes every process sign tokens with the same key.
        general = current.get("General", {})
        return {"General": {k: v for k, v in generated.items() if not general.get(k)}}

    written = _update_file(path, still_empty, label)
    return {key: written["General"][key] for key in generated}


# -- writing ----------------------------------------------------------------------------


def write_settings(path: str | os.PathLike[str], changes: Mapping[str, Mapping[str, Value]]) -> None:
    """Set `changes` (section → key → value) in config.ini, atomically, keeping the rest.

    Lines of other keys, comments and order are left byte-for-byte; a missing key is
    added at the end of its section, a missing section at the end of the file. The
    file (created when missing) is left with mode 0600.
    """
    label = os.fspath(path)
    _update_file(os.path.abspath(label), lambda _current: changes, label)


def _update_file(
    path: str,
    compute: Callable[[ConfigObj], Mapping[str, Mapping[str, Value]]],
    label: str,
) -> ConfigObj:
    """Apply compute(current config) to the file under a lock; return the new config."""
    target = os.path.realpath(path)  # a symlinked config.ini stays a symlink
    directory = os.path.dirname(target)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with _locked(directory) as directory_fd:
            old = _read_bytes(target, label)
            current = _parse(old or b"", label)
            changes = {s: dict(kv) for s, kv in compute(current).items() if kv}
            if not changes:
                return current
            new = patched(old, changes)
            written = _parse(new, label)
            _check_round_trip(current, written, changes)
            _atomic_write(target, new, directory_fd)
            return written
    except OSError as exc:
        raise ConfigError(label, f"cannot write the file: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[int | None]:
    """Hold an exclusive lock on `directory` so read-modify-write cycles do not interleave."""
    try:
        fd: int | None = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory
        fd = None
    try:
        if fd is not None and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock


def _atomic_write(path: str, data: bytes, directory_fd: int | None) -> None:
    """Replace `path` with `data` so readers see the old file or the new, never a mix."""
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates the file 0600, whatever the umask: secrets never leak, even briefly.
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if directory_fd is not None:
        os.fsync(directory_fd)  # make the rename itself survive a crash


def _check_round_trip(before: ConfigObj, after: ConfigObj, changes: dict[str, dict[str, Value]]) -> None:
    """Refuse a patch unless it changed exactly the requested keys to the requested values."""
    expected = before.dict()
    for section, values in changes.items():
        expected.setdefault(section, {}).update(values)
    if after.dict() != expected:
        raise ValueError("the change cannot be written to config.ini without altering other keys")
