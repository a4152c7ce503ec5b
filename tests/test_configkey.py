"""The table of config.ini keys (Settings' key(...) lines) drives every place a key appears.

Each test walks the table (settings.KEYS) and checks one derived place against what
the key declares, independently of the code that derives it: CONFIGSPEC, the checks
Settings runs, config.ini error messages, the GET /config view, PATCH /config and the
served OpenAPI schema. A key added to the table is covered here without a line more.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from configobj import ConfigObj
from validate import Validator

from medusa_v2.config import CONFIGSPEC, ConfigError, configspec, load_config
from medusa_v2.config_endpoint import describe
from medusa_v2.configkey import Key, key, keys_of
from medusa_v2.settings import KEYS, Settings, SettingsError

NUMBERS = [spec for spec in KEYS if spec.type in (int, float)]
SECRETS = [spec for spec in KEYS if spec.secret]
SPEC_TYPES = {str: "string", bool: "boolean", int: "integer", float: "float", tuple: "force_list"}
JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", tuple: "array"}
MARK = "s3cr3t-mark"
# A value with MARK in it that each secret key accepts (a URL's password for the database).
SECRET_VALUES = {"database_url": f"postgresql://user:{MARK}@db.example/medusa"}
# What GET /config adds to the keys the table shows.
VIEW_EXTRAS = {"authRequired", "database", "version", "writable"}
DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def ids(spec: Key) -> str:
    return spec.field


def as_settings_value(value):
    return tuple(value) if isinstance(value, list) else value


def test_every_settings_field_is_a_declared_key():
    fields = {f.name for f in dataclasses.fields(Settings)} - {"config_path"}
    assert fields == {spec.field for spec in KEYS}
    assert len({(spec.section, spec.name) for spec in KEYS}) == len(KEYS)


def test_configspec_names_exactly_the_table():
    spec = ConfigObj(CONFIGSPEC.splitlines(), list_values=False, _inspec=True)
    declared = {(section, name) for section in spec for name in spec[section]}
    assert declared == {(k.section, k.name) for k in KEYS}


@pytest.mark.parametrize("spec", KEYS, ids=ids)
def test_configspec_type_and_default_come_from_the_table(spec):
    line = ConfigObj(CONFIGSPEC.splitlines(), list_values=False, _inspec=True)[spec.section][spec.name]
    assert line.startswith(SPEC_TYPES[spec.type] + "(default=")
    empty = ConfigObj([], configspec=CONFIGSPEC.splitlines())
    assert empty.validate(Validator()) is True
    assert as_settings_value(empty[spec.section][spec.name]) == spec.default == getattr(Settings(), spec.field)


@pytest.mark.parametrize("spec", NUMBERS, ids=ids)
def test_bounds_are_checked_by_settings_and_named_in_config_ini(spec, tmp_path):
    low, high = spec.bounds
    assert getattr(Settings(**{spec.field: low}), spec.field) == low
    assert getattr(Settings(**{spec.field: high}), spec.field) == high
    step = 1 if spec.type is int else 0.05
    for outside in (low - step, high + step):
        with pytest.raises(SettingsError) as caught:
            Settings(**{spec.field: spec.type(outside)})
        assert caught.value.field == spec.field and "out of range" in caught.value.problem
    path = tmp_path / "config.ini"
    path.write_text(f"[{spec.section}]\n{spec.name} = {spec.type(high + step)}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, write_back=False)
    assert (caught.value.section, caught.value.key) == (spec.section, spec.name)


@pytest.mark.parametrize("spec", SECRETS, ids=ids)
def test_a_secret_is_never_shown_logged_or_echoed(spec, tmp_path):
    settings = Settings(**{spec.field: SECRET_VALUES.get(spec.field, MARK)})
    assert MARK not in repr(settings)
    assert not next(f.repr for f in dataclasses.fields(Settings) if f.name == spec.field)
    assert MARK not in str(describe(settings, "1"))
    assert spec.json_name not in describe(settings, "1")
    path = tmp_path / "config.ini"
    path.write_text(f"[{spec.section}]\n{spec.name} = {MARK}, {MARK}\n")  # a list: refused
    with pytest.raises(ConfigError) as caught:
        load_config(path, write_back=False)
    assert caught.value.key == spec.name and MARK not in str(caught.value)


def test_the_view_shows_exactly_the_shown_keys_with_their_values():
    settings = Settings()
    view = describe(settings, "1")
    assert set(view) - VIEW_EXTRAS == {spec.json_name for spec in KEYS if spec.shown}
    for spec in KEYS:
        if spec.shown:
            assert as_settings_value(view[spec.json_name]) == getattr(settings, spec.field)
    assert view["writable"] == sorted(spec.json_name for spec in KEYS if spec.runtime)


def test_runtime_keys_are_shown_and_secrets_are_not():
    assert all(spec.shown for spec in KEYS if spec.runtime)
    assert not any(spec.shown or spec.runtime for spec in KEYS if spec.secret)


def expected_schema(spec: Key, *, patch: bool) -> dict:
    if spec.type is tuple:
        items = {"type": "string", **({"pattern": spec.pattern} if spec.pattern else {})}
        return {"type": "array", "items": items}
    schema = {"type": JSON_TYPES[spec.type]}
    if spec.bounds:
        low = max(spec.bounds[0], spec.patch_minimum or spec.bounds[0]) if patch else spec.bounds[0]
        schema.update(minimum=low, maximum=spec.bounds[1])
    return schema


@pytest.mark.gen_test
async def test_the_served_openapi_schema_describes_the_table(client):
    doc = (await client.get("/openapi.json")).json
    config = doc["paths"]["/config"]
    view = config["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(view["properties"]) - VIEW_EXTRAS == {spec.json_name for spec in KEYS if spec.shown}
    assert set(view["required"]) == set(view["properties"])
    patch = config["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(patch["properties"]) == {spec.json_name for spec in KEYS if spec.runtime}
    for spec in KEYS:
        if spec.shown:
            assert view["properties"][spec.json_name] == expected_schema(spec, patch=False)
        if spec.runtime:
            assert patch["properties"][spec.json_name] == expected_schema(spec, patch=True)


def patched_value(spec: Key):
    """Return a JSON value other than the default that the key accepts over PATCH."""
    if spec.type is tuple:
        return ["https://patched.example"]
    if spec.type is bool:
        return not spec.default
    return spec.bounds[1]


@pytest.mark.gen_test
async def test_patch_sets_exactly_the_runtime_keys_and_writes_them_where_the_table_says(client, settings):
    runtime = [spec for spec in KEYS if spec.runtime]
    body = {spec.json_name: patched_value(spec) for spec in runtime}
    body.update({spec.json_name: "x" for spec in KEYS if not spec.runtime})  # ignored, even when invalid
    r = await client.patch("/config", json_body=body)
    assert r.code == 200, r.json
    assert set(r.json) == {spec.json_name for spec in runtime}
    reread = load_config(settings.config_path, write_back=False)
    written = ConfigObj(settings.config_path)
    for spec in runtime:
        assert getattr(reread, spec.field) == as_settings_value(patched_value(spec))
        assert spec.name in written[spec.section]
    for spec in KEYS:
        if not spec.runtime:
            assert getattr(reread, spec.field) == getattr(settings, spec.field)


# -- a new key is one line, and a half-declared one fails at import ----------------------


def test_a_new_key_is_one_line():
    @dataclasses.dataclass(frozen=True)
    class Toy:
        level: int = key("Extra", 3, bounds=(1, 5), runtime=True)

    (spec,) = keys_of(Toy)
    assert (spec.field, spec.name, spec.section, spec.shown) == ("level", "level", "Extra", True)
    assert configspec(keys_of(Toy)) == "[Extra]\nlevel = integer(default=3)\n"
    assert spec.json_schema() == {"type": "integer", "minimum": 1, "maximum": 5}
    assert spec.config_text(4) == "4"
    with pytest.raises(ValueError, match=r"6 is out of range \(1\.\.5\)"):
        spec.check(6)


@pytest.mark.parametrize(
    "arguments",
    [
        {"default": 3},  # a number without bounds
        {"default": "x", "bounds": (1, 2)},  # bounds on a string
        {"default": "", "secret": True, "shown": True},
        {"default": "", "secret": True, "runtime": True},
        {"default": "", "masked": str},  # a masked form of something that is not a secret
        {"default": 3, "bounds": (1, 5), "patch_minimum": 2},  # not settable at runtime
        {"default": ["a"]},  # a list default: a tuple of strings is the list type
    ],
)
def test_an_inconsistent_key_is_refused(arguments):
    with pytest.raises(TypeError):
        key("API", **arguments)


def test_a_default_the_key_refuses_is_refused():
    with pytest.raises(ValueError):
        key("API", 9, bounds=(1, 5))


# -- the documentation lists each key under its section, with its default and bounds ----


def documented_rows() -> dict[tuple[str, str], str]:
    """Return docs/configuration.md's key rows: (section, key) -> the row's text."""
    rows: dict[tuple[str, str], str] = {}
    section = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## \[(\w+)\]", line)
        if heading:
            section = heading.group(1)
        elif line.startswith("## "):
            section = None
        row = re.match(r"\| `(\w+)` \|", line)
        if section and row:
            rows[section, row.group(1)] = line
    return rows


def documented_default(spec: Key) -> str:
    if spec.type is bool:
        return "`1`" if spec.default else "`0`"
    if spec.type is tuple:
        return f"`{', '.join(spec.default)}`" if spec.default else "empty"
    if spec.default == "":
        return "empty"
    return f"`{spec.default}`"


@pytest.mark.parametrize("spec", KEYS, ids=ids)
def test_the_documentation_has_the_tables_default_and_bounds(spec):
    row = documented_rows().get((spec.section, spec.name))
    assert row is not None, f"docs/configuration.md has no row for [{spec.section}] {spec.name}"
    default = row.split("|")[2].strip()
    assert default.startswith(documented_default(spec)) or (spec.secret and default == "generated"), row
    if spec.bounds:
        low, high = (f"{bound}" if spec.type is int else f"{bound:g}" for bound in spec.bounds)
        assert re.search(rf"\b{re.escape(low)} ?(to|–) ?{high}\b", row), row
