"""Apply a de-identification recipe (PS3.15 Annex E basic profile by default) to a pydicom Dataset.

The recipe is data (`compliance/deid/*.yaml`, loaded by `compliance.deid_recipe.load_recipe`);
this module only executes it:

* every element gets one action: `X` remove, `Z` empty, `D` dummy value of its VR, `K` keep,
  `U` remap UID. Listed tags take the recipe's action; private tags, curves (50xx) and overlays
  (60xx) are removed; unlisted text/name/date VRs are removed; unlisted UIDs are remapped unless
  they are standard well-known UIDs; the recipe is applied inside every kept sequence item.
* UIDs are remapped with a keyed HMAC-SHA256 of the original UID, written as `2.25.<int>`: the same
  key gives the same new UID in every file and every run, so references across sequences and
  files stay consistent, and without the key the mapping cannot be recomputed or reversed.
* kept elements whose tag has `allowed_values` in the recipe are removed when they hold any
  other value (free text in a CS such as BodyPartExamined).
* pixel data is rebuilt, not copied (`dicom_io.deid_pixels`): COM/APPn segments and bytes outside
  the image are dropped, after the size caps were checked from the header
  (`dicom_io.limits.check_pixel_budget`). Files whose pixels may carry burned-in text
  (BurnedInAnnotation absent, YES or odd; a modality of `recipe.burned_in_modalities`) or whose
  pixel encoding cannot be rebuilt are flagged for a human pixel check, never silently passed.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from compliance.deid_recipe import Recipe, format_tag
from dicom_io.deid_pixels import rebuild_pixel_data
from dicom_io.errors import DeidentificationError, DicomIOError
from dicom_io.limits import Limits, check_pixel_budget

KEY_ENV = "MEDVLM_DEID_KEY"
"""Environment variable holding the UID-remapping key when no key file is given."""

MIN_KEY_BYTES = 16
"""Shortest accepted key: 128 bits, so that new UIDs cannot be brute-forced back to old ones."""

FLAG_BURNED_IN_MISSING = "burned_in_annotation_missing"
FLAG_BURNED_IN_YES = "burned_in_annotation_yes"
FLAG_BURNED_IN_UNKNOWN = "burned_in_annotation_unknown"
FLAG_BURNED_IN_MODALITY = "burned_in_text_modality"
FLAG_PIXELS_NOT_REBUILT = "pixel_data_not_rebuilt"
PIXEL_REVIEW_FLAGS = frozenset({FLAG_BURNED_IN_MISSING, FLAG_BURNED_IN_YES, FLAG_BURNED_IN_UNKNOWN,
                                FLAG_BURNED_IN_MODALITY, FLAG_PIXELS_NOT_REBUILT})
"""Flags meaning "a person must check the pixels for burned-in text before release"."""

_KEY_HINT = (
    f"pass --key-file FILE or set ${KEY_ENV}; create a key once with "
    "`python -c \"import secrets; print(secrets.token_hex(32))\" > deid.key`, keep it secret and "
    "reuse it so that UIDs stay consistent across runs"
)
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
                       "UC", "UI", "UR", "UT"})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData
_BURNED_IN_ANNOTATION = 0x00280301


@dataclass(frozen=True)
class DeidResult:
    """The outcome of de-identifying one dataset.

    Args:
        dataset: the new, de-identified dataset (the input is left untouched).
        flags: PHI-free reason codes needing a human, e.g. `burned_in_annotation_missing`.
        recipe_version: version of the recipe that produced `dataset`.
        actions_applied: how many elements each action touched (`X`, `Z`, `D`, `U`), for audits.
    """

    dataset: Dataset
    flags: tuple[str, ...]
    recipe_version: str
    actions_applied: Mapping[str, int] = field(default_factory=dict)

    @property
    def needs_pixel_review(self) -> bool:
        """True when the pixels may hold burned-in text (BurnedInAnnotation missing, YES or odd)."""
        return any(flag in PIXEL_REVIEW_FLAGS for flag in self.flags)


def load_key(key_file: Path | None = None, *, environ: Mapping[str, str] | None = None) -> bytes:
    """Load the secret key for UID remapping: from `key_file`, else from `$MEDVLM_DEID_KEY`.

    There is no default key on purpose: a default would let anyone recompute the mapping.

    Args:
        key_file: file whose content (surrounding whitespace stripped) is the key.
        environ: environment to read `MEDVLM_DEID_KEY` from; None means `os.environ`.

    Returns:
        The key bytes (at least `MIN_KEY_BYTES`).

    Raises:
        DeidentificationError: no key given, key file missing/unreadable, or key too short; the
            message says how to provide one.
    """
    if key_file is not None:
        path = Path(key_file)
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise DeidentificationError(path, f"cannot read the de-identification key file "
                                        f"({type(exc).__name__})", _KEY_HINT) from None
        source: Path | None = path
    else:
        env = os.environ if environ is None else environ
        value = env.get(KEY_ENV, "").strip()
        if not value:
            raise DeidentificationError(None, "no de-identification key given", _KEY_HINT)
        key, source = value.encode("utf-8"), None
    if len(key) < MIN_KEY_BYTES:
        where = "key file" if source is not None else f"${KEY_ENV}"
        raise DeidentificationError(source, f"de-identification key too short in {where}: "
                                    f"{len(key)} bytes, need at least {MIN_KEY_BYTES}", _KEY_HINT)
    return key


def remap_uid(uid: str, key: bytes) -> str:
    """Map a UID to a new one with a keyed HMAC-SHA256, formatted as a `2.25.<int>` UID.

    The first 128 bits of the digest become the integer (as in ISO/IEC 9834-8 UUID-derived
    UIDs), so the result has at most 44 characters (limit 64) and no leading zeros.

    Args:
        uid: the original UID (trailing padding is ignored).
        key: the secret key from `load_key`.

    Returns:
        The new UID; the same `uid` and `key` always give the same result.
    """
    digest = hmac.new(key, uid.strip().rstrip("\x00").encode("ascii", "replace"), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def deidentify(ds: Dataset, recipe: Recipe, key: bytes, *, path: str | Path | None = None,
               limits: Limits | None = None) -> DeidResult:
    """De-identify a dataset with a recipe; the input dataset is not modified.

    Args:
        ds: the dataset to de-identify (with or without file meta).
        recipe: the validated recipe (`compliance.deid_recipe.load_recipe`).
        key: UID-remapping key (`load_key`); at least `MIN_KEY_BYTES` bytes.
        path: the source file, used only to name it in error messages.
        limits: size caps checked before pixel data is rebuilt; None reads the environment.

    Returns:
        A `DeidResult` with the new dataset (PatientIdentityRemoved, DeidentificationMethod and
        its code sequence written; file meta rebuilt with the new SOP instance UID), the pixel
        review flags and the recipe version.

    Raises:
        DeidentificationError: the key is too short, the recipe asks for something that cannot
            be done safely (a dummy value for a VR it gives none, a dummy for a sequence), or the
            pixel data does not parse as its transfer syntax says.
        PixelDataError: the pixel data is over a cap or shorter than declared (`ImageTooLarge`).
    """
    if len(key) < MIN_KEY_BYTES:
        raise DeidentificationError(path, f"de-identification key shorter than {MIN_KEY_BYTES} bytes",
                                    _KEY_HINT)
    out = copy.deepcopy(ds)
    if getattr(out, "preamble", None) is not None:
        out.preamble = b"\x00" * 128  # a preamble can carry anything (dual TIFF/DICOM files)
    counts: Counter[str] = Counter()
    dates_changed = _apply(out, recipe, key, counts, path)
    _write_deid_attributes(out, ds, recipe, dates_changed)
    flags = list(_pixel_flags(ds))
    meta = getattr(ds, "file_meta", None)
    tsyntax = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ""
    if _has_pixels(ds):
        modality = str(ds.get("Modality", "") or "").strip().upper()
        if modality in recipe.burned_in_modalities:
            flags.append(FLAG_BURNED_IN_MODALITY)
        new_tsyntax, rebuilt = _rebuild_pixels(out, tsyntax, path, limits)
        if not rebuilt:
            flags.append(FLAG_PIXELS_NOT_REBUILT)
        tsyntax = new_tsyntax
    if tsyntax:
        out.file_meta = _new_file_meta(out, tsyntax, path)
    return DeidResult(dataset=out, flags=tuple(flags), recipe_version=recipe.version,
                      actions_applied=dict(counts))


def _has_pixels(ds: Dataset) -> bool:
    return any(tag in ds for tag in _PIXEL_TAGS)


def _rebuild_pixels(out: Dataset, tsyntax: str, path: str | Path | None,
                    limits: Limits | None) -> tuple[str, bool]:
    """Check the caps, then rebuild `out`'s pixel data; (transfer syntax, rebuilt?)."""
    if "PixelData" not in out or not tsyntax:
        return tsyntax, "PixelData" not in out
    check_pixel_budget(out, path, limits)  # before anything is decoded or parsed
    try:
        return rebuild_pixel_data(out, tsyntax)
    except DicomIOError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes; the message could quote them
        raise DeidentificationError(path, f"pixel data could not be rebuilt ({type(exc).__name__})",
                                    "the pixel data does not parse as its transfer syntax says; "
                                    "re-export the image") from None


def action_for(elem: DataElement, recipe: Recipe) -> str:
    """The action the recipe gives one element, defaults included (see `compliance/deid/README.md`).

    Args:
        elem: a data element of the dataset (at any sequence depth).
        recipe: the recipe.

    Returns:
        One of `X Z D K U`.
    """
    tag = elem.tag
    if tag.is_private:
        return recipe.private_action
    if (tag.group >> 8) in recipe.removed_group_prefixes:
        return "X"
    if tag.element == 0:
        return recipe.group_length_action
    if int(tag) in recipe.actions:
        return recipe.actions[int(tag)]
    if elem.VR == "SQ":
        return recipe.sequence_action
    if elem.VR == "UI":
        if recipe.uid_action == "X":  # deny by default: even standard UIDs only when listed
            return "X"
        if all(uid.startswith(recipe.well_known_uid_root) for uid in _uids(elem)):
            return "K"
        return recipe.uid_action
    if elem.VR in recipe.removed_vrs:
        return "X"
    return recipe.other_action


def _uids(elem: DataElement) -> list[str]:
    value = elem.value
    if value is None or value == "":
        return []
    values = [value] if isinstance(value, str) else list(value)  # UID is a str; MultiValue is not
    return [str(v) for v in values if str(v)]


def _allowed(elem: DataElement, allowed: tuple[str, ...]) -> bool:
    """True when every value of `elem` is one of `allowed` (or fully matches an `re:` entry)."""
    value = elem.value
    values = [""] if value is None else ([value] if isinstance(value, str | bytes) else list(value))
    for raw in values or [""]:
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        text = text.strip(" \x00")
        if text not in allowed and not any(a.startswith("re:") and re.fullmatch(a[3:], text) for a in allowed):
            return False
    return True


def _apply(ds: Dataset, recipe: Recipe, key: bytes, counts: Counter[str], path: str | Path | None) -> bool:
    """Apply the recipe to `ds` in place, recursing into sequences; True if a date/time changed."""
    dates_changed = False
    for tag in list(ds.keys()):
        elem = ds[tag]
        action = action_for(elem, recipe)
        had_value = not elem.is_empty
        if elem.VR == "SQ":
            if action == "X":
                del ds[tag]
            elif action == "Z":
                elem.value = Sequence()
            elif action in ("K", "U"):  # keep the sequence; the recipe applies inside every item
                for item in elem.value:
                    dates_changed |= _apply(item, recipe, key, counts, path)
                continue
            else:
                raise DeidentificationError(path, f"recipe action {action} is not defined for sequence "
                                            f"{format_tag(int(tag))}", "use X, Z or K for sequences")
            counts[action] += 1
            continue
        if action == "K":
            if int(tag) in recipe.allowed_values and not _allowed(elem, recipe.allowed_values[int(tag)]):
                del ds[tag]
                counts["X"] += 1
            continue
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = "" if elem.VR in _TEXT_VRS else None
        elif action == "U" or (action == "D" and elem.VR == "UI"):
            if elem.VR != "UI":
                raise DeidentificationError(path, f"recipe action U on {format_tag(int(tag))} whose VR is "
                                            f"{elem.VR}, not UI", "fix the recipe entry for this tag")
            new = [remap_uid(uid, key) for uid in _uids(elem)]
            elem.value = new[0] if len(new) == 1 else (new or "")
            action = "U"
        elif action == "D":
            dummy = recipe.dummy_values.get(elem.VR)
            if dummy is None:
                raise DeidentificationError(path, f"recipe action D on {format_tag(int(tag))} but no dummy "
                                            f"value for VR {elem.VR}", "add it under dummy_values in the recipe")
            elem.value = dummy
        counts[action] += 1
        if elem.VR in _DATE_VRS and had_value:
            dates_changed = True
    return dates_changed


def _write_deid_attributes(out: Dataset, original: Dataset, recipe: Recipe, dates_changed: bool) -> None:
    """Record that (and how) the dataset was de-identified (PS3.3 C.7.1.1 Patient Module)."""
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = recipe.method
    code = Dataset()
    code.CodeValue = recipe.profile_code.get("value", "113100")
    code.CodingSchemeDesignator = recipe.profile_code.get("scheme", "DCM")
    code.CodeMeaning = recipe.profile_code.get("meaning", "Basic Application Confidentiality Profile")
    out.DeidentificationMethodCodeSequence = Sequence([code])
    if dates_changed:
        # Dates were emptied, removed or replaced by dummies (not shifted): intervals are lost.
        out.LongitudinalTemporalInformationModified = "REMOVED"
    elif "LongitudinalTemporalInformationModified" not in original:
        out.LongitudinalTemporalInformationModified = "UNMODIFIED"


def _new_file_meta(out: Dataset, tsyntax: str, path: str | Path | None) -> FileMetaDataset:
    """Fresh file meta: same SOP class, the (rebuilt) transfer syntax, the new SOP instance UID, no source AE."""
    if "SOPInstanceUID" not in out or "SOPClassUID" not in out:
        raise DeidentificationError(path, "dataset has no SOPInstanceUID/SOPClassUID; cannot write file meta",
                                    "only composite DICOM instances can be de-identified to files")
    new = FileMetaDataset()
    new.MediaStorageSOPClassUID = out.SOPClassUID
    new.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    new.TransferSyntaxUID = UID(tsyntax)
    new.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return new


def _pixel_flags(ds: Dataset) -> tuple[str, ...]:
    """Flags for a human pixel check: BurnedInAnnotation (0028,0301) missing, YES, or not YES/NO."""
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return ()  # no pixels, nothing burned in
    if _BURNED_IN_ANNOTATION not in ds or ds[_BURNED_IN_ANNOTATION].is_empty:
        return (FLAG_BURNED_IN_MISSING,)
    value = str(ds[_BURNED_IN_ANNOTATION].value).strip().upper()
    if value == "YES":
        return (FLAG_BURNED_IN_YES,)
    if value != "NO":
        return (FLAG_BURNED_IN_UNKNOWN,)
    return ()
