"""De-identification recipes as data: load and validate a versioned recipe file (STYLE rule 17).

A recipe names an action per DICOM tag (`X` remove, `Z` empty, `D` dummy value, `K` keep,
`U` remap UID) and a deny-by-default policy for every tag it does not name. The file format is
described in `compliance/deid/README.md`; `dicom_io.deid` applies a `Recipe` to a dataset.

This module is pure data handling (stdlib + PyYAML): it imports no other medvlm package.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

ACTIONS = frozenset({"X", "Z", "D", "K", "U"})
"""Remove, zero-length, dummy value, keep, remap UID."""

DEFAULT_RECIPE = Path(__file__).resolve().parent / "deid" / "ps3_15_basic_v2.yaml"
"""The versioned PS3.15 Annex E basic-profile recipe shipped with medvlm (deny by default since v2)."""

_TOP_KEYS = {"name", "version", "standard", "profile_code", "defaults", "dummy_values", "attributes",
             "allowed_values"}
_DEFAULT_KEYS = {"private_tags", "removed_groups", "group_length", "removed_vrs", "uid",
                 "well_known_uid_root", "sequences", "other", "burned_in_modalities"}
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_TAG_RE = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
_GROUP_RE = re.compile(r"^([0-9A-Fa-f]{2})xx$")
_VR_RE = re.compile(r"^[A-Z]{2}$")
_LO_MAX = 64  # DeidentificationMethod is LO: "<name> <version>" must fit


class RecipeError(ValueError):
    """The recipe file is missing or invalid; the message names the file and the offending tag/key."""


@dataclass(frozen=True)
class Recipe:
    """A validated de-identification recipe (immutable).

    Build it with `load_recipe`; `dicom_io.deid.deidentify` applies it.
    """

    name: str
    """Short recipe name, written with `version` into DeidentificationMethod (0012,0063)."""
    version: str
    """Semantic version `MAJOR.MINOR.PATCH`; bumped on every change of an action or default."""
    actions: Mapping[int, str]
    """Action per tag (`0xGGGGEEEE` -> one of `X Z D K U`) for the attributes the recipe names."""
    keywords: Mapping[int, str]
    """DICOM keyword per listed tag, as written in the file (checked against pydicom in tests)."""
    dummy_values: Mapping[str, str]
    """Value written by action `D`, per VR."""
    removed_vrs: frozenset[str]
    """VRs removed when an attribute is not listed: text, names, dates, ages can carry PHI."""
    removed_group_prefixes: frozenset[int]
    """High bytes of groups removed entirely (`0x50` curves, `0x60` overlays)."""
    private_action: str = "X"
    """Action for every private (odd-group) element, private creators included."""
    group_length_action: str = "X"
    """Action for group length elements (gggg,0000)."""
    uid_action: str = "U"
    """Action for unlisted UI elements whose value is not under `well_known_uid_root`."""
    well_known_uid_root: str = "1.2.840.10008."
    """Standard UIDs (SOP classes, transfer syntaxes) start here and are kept: they identify no one."""
    sequence_action: str = "K"
    """Action for unlisted sequences: `K` keeps them and applies the recipe inside each item."""
    other_action: str = "K"
    """Action for unlisted elements of any other VR (CS, numbers, AT, binary)."""
    standard: str = ""
    """The standard text this recipe implements (documentation only)."""
    profile_code: Mapping[str, str] = field(default_factory=dict)
    """Code written into DeidentificationMethodCodeSequence: keys `value`, `scheme`, `meaning`."""
    allowed_values: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    """For kept (`K`) tags: the only values kept; an element with any other value is removed.
    An entry starting with `re:` is a regular expression the whole value must match."""
    burned_in_modalities: frozenset[str] = frozenset()
    """Modalities whose pixels often carry burned-in text: their files are flagged for a human."""
    source: str = ""
    """Path of the file it was loaded from (for messages)."""
    sha256: str = ""
    """SHA-256 of the file bytes: ties an export to the exact recipe text."""

    @property
    def method(self) -> str:
        """The DeidentificationMethod (0012,0063) text: `"<name> <version>"` (LO, <= 64 chars)."""
        return f"{self.name} {self.version}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise RecipeError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def format_tag(tag: int) -> str:
    """`0x00100010` -> `"(0010,0010)"`."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def parse_tag(text: str) -> int:
    """Parse `"00100010"`, `"0010,0010"` or `"(0010,0010)"` into `0x00100010`.

    Raises:
        RecipeError: the text is not a tag.
    """
    match = _TAG_RE.match(str(text).strip())
    if not match:
        raise RecipeError(f"tag {text!r} is not of the form GGGGEEEE or (GGGG,EEEE)")
    return int(match.group(1) + match.group(2), 16)


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Load and validate a recipe file.

    Args:
        path: a recipe YAML file; None loads `DEFAULT_RECIPE` (the shipped basic profile).

    Returns:
        The validated, immutable `Recipe`.

    Raises:
        RecipeError: the file is missing, not YAML, or invalid; the message names the file and
            the offending key or tag (for example an unknown action).
    """
    path = Path(path) if path is not None else DEFAULT_RECIPE
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found (pass --recipe FILE, or omit it for the default)")
    raw = path.read_bytes()
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid YAML ({type(exc).__name__})") from None
    return recipe_from_dict(data, source=str(path), sha256=hashlib.sha256(raw).hexdigest())


def recipe_from_dict(data: Any, *, source: str = "<dict>", sha256: str = "") -> Recipe:
    """Validate the parsed content of a recipe file and build a `Recipe`.

    Args:
        data: the mapping read from a recipe file.
        source: where it came from, used in error messages.
        sha256: digest of the file bytes, recorded in the recipe.

    Returns:
        The validated `Recipe`.

    Raises:
        RecipeError: a required key is missing, a key is unknown, the version is not
            `MAJOR.MINOR.PATCH`, or an attribute entry is malformed (the message names the tag).
    """

    def fail(msg: str) -> RecipeError:
        return RecipeError(f"{source}: {msg}")

    if not isinstance(data, dict):
        raise fail("a recipe must be a mapping with name, version, defaults, dummy_values, attributes")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise fail(f"unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    for key in ("name", "version", "defaults", "dummy_values", "attributes"):
        if key not in data:
            raise fail(f"missing required key '{key}'")
    name, version = data["name"], data["version"]
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        raise fail("'name' must be a non-empty string without spaces")
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise fail(f"'version' must be a quoted string MAJOR.MINOR.PATCH, got {version!r}")
    if len(name) + 1 + len(version) > _LO_MAX:
        raise fail(f"'name' + 'version' must fit in {_LO_MAX} characters (DeidentificationMethod is LO)")

    defaults = data["defaults"]
    if not isinstance(defaults, dict):
        raise fail("'defaults' must be a mapping")
    unknown = set(defaults) - _DEFAULT_KEYS
    if unknown:
        raise fail(f"unknown key(s) in 'defaults' {sorted(unknown)}; allowed: {sorted(_DEFAULT_KEYS)}")

    def default_action(key: str, fallback: str, allowed: frozenset[str] = ACTIONS) -> str:
        value = defaults.get(key, fallback)
        if value not in allowed:
            raise fail(f"defaults.{key}: action {value!r} not one of {sorted(allowed)}")
        return value

    removed_vrs = defaults.get("removed_vrs", [])
    if not isinstance(removed_vrs, list) or not all(isinstance(v, str) and _VR_RE.match(v) for v in removed_vrs):
        raise fail("defaults.removed_vrs must be a list of two-letter VRs such as PN, LO")
    prefixes = set()
    for group in defaults.get("removed_groups", []):
        match = _GROUP_RE.match(str(group))
        if not match:
            raise fail(f"defaults.removed_groups: {group!r} is not of the form '60xx'")
        prefixes.add(int(match.group(1), 16))
    root = defaults.get("well_known_uid_root", "1.2.840.10008.")
    if not isinstance(root, str) or not re.match(r"^[0-9.]+\.$", root):
        raise fail("defaults.well_known_uid_root must be a UID prefix ending with '.'")

    dummies = data["dummy_values"]
    if not isinstance(dummies, dict) or not all(
        isinstance(k, str) and _VR_RE.match(k) and isinstance(v, str) for k, v in dummies.items()
    ):
        raise fail("'dummy_values' must map two-letter VRs to quoted strings")

    attributes = data["attributes"]
    if not isinstance(attributes, dict) or not attributes:
        raise fail("'attributes' must be a non-empty mapping of tag -> [action, keyword]")
    actions: dict[int, str] = {}
    keywords: dict[int, str] = {}
    for raw_tag, entry in attributes.items():
        try:
            tag = parse_tag(raw_tag)
        except RecipeError as exc:
            raise fail(str(exc)) from None
        where = f"tag {format_tag(tag)}"
        if tag in actions:
            raise fail(f"{where} is listed twice")
        if not isinstance(entry, list) or len(entry) not in (2, 3):
            raise fail(f"{where}: entry must be [action, keyword] or [action, keyword, table code]")
        action, keyword = entry[0], entry[1]
        if not isinstance(keyword, str) or not keyword.isidentifier():
            raise fail(f"{where}: keyword {keyword!r} must be a DICOM keyword such as PatientName")
        if action not in ACTIONS:
            raise fail(f"{where} {keyword}: unknown action {action!r}; use one of {', '.join(sorted(ACTIONS))}")
        actions[tag] = action
        keywords[tag] = keyword

    allowed = _allowed_values(data.get("allowed_values", {}), actions, fail)
    modalities = defaults.get("burned_in_modalities", [])
    if not isinstance(modalities, list) or not all(isinstance(m, str) and m.strip() for m in modalities):
        raise fail("defaults.burned_in_modalities must be a list of modality codes such as US, SC")

    code = data.get("profile_code", {"value": "113100", "scheme": "DCM",
                                     "meaning": "Basic Application Confidentiality Profile"})
    if not isinstance(code, dict) or set(code) != {"value", "scheme", "meaning"}:
        raise fail("'profile_code' must have exactly value, scheme, meaning")

    return Recipe(
        name=name,
        version=version,
        actions=MappingProxyType(actions),
        keywords=MappingProxyType(keywords),
        dummy_values=MappingProxyType(dict(dummies)),
        removed_vrs=frozenset(removed_vrs),
        removed_group_prefixes=frozenset(prefixes),
        private_action=default_action("private_tags", "X", frozenset({"X", "K"})),
        group_length_action=default_action("group_length", "X", frozenset({"X", "K"})),
        uid_action=default_action("uid", "U", frozenset({"U", "K", "X"})),
        well_known_uid_root=root,
        sequence_action=default_action("sequences", "K", frozenset({"K", "X"})),
        other_action=default_action("other", "K", frozenset({"K", "X"})),
        allowed_values=MappingProxyType(allowed),
        burned_in_modalities=frozenset(m.strip() for m in modalities),
        standard=str(data.get("standard", "")),
        profile_code=MappingProxyType({k: str(v) for k, v in code.items()}),
        source=source,
        sha256=sha256,
    )


def _allowed_values(raw: Any, actions: Mapping[int, str], fail: Any) -> dict[int, tuple[str, ...]]:
    """Validate `allowed_values`: tag -> list of values (or `re:` patterns) for tags the recipe keeps."""
    if not isinstance(raw, dict):
        raise fail("'allowed_values' must map tags to lists of values")
    out: dict[int, tuple[str, ...]] = {}
    for raw_tag, values in raw.items():
        try:
            tag = parse_tag(raw_tag)
        except RecipeError as exc:
            raise fail(f"allowed_values: {exc}") from None
        where = f"allowed_values {format_tag(tag)}"
        if actions.get(tag) != "K":
            raise fail(f"{where}: only tags listed with action K can have allowed values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise fail(f"{where}: must be a list of quoted strings")
        for value in values:
            if value.startswith("re:"):
                try:
                    re.compile(value[3:])
                except re.error:
                    raise fail(f"{where}: {value!r} is not a valid regular expression") from None
        out[tag] = tuple(values)
    return out
