"""Deny-by-default de-identification: markers planted in 59 places, 0 left in the output bytes or names.

Each marker is a unique token (`QZM01`...). The test first greps the INPUT bytes and names and
requires every marker there (so the grep can fail), runs `medvlm deid`'s job, then greps every
byte of every released output (the .dcm files, deid_manifest.json, needs_pixel_review.jsonl) and
every output path. failed.jsonl is the operator's list of source files and is not released.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid

from pipelines.intake.deid import FAILED_NAME, run_deid

KEY_TEXT = "marker-test-key-0123456789abcdef"
_markers: list[str] = []


def m(place: str) -> str:
    """A new marker for one place (uppercase and digits, so it fits CS/AE values too)."""
    token = f"QZM{len(_markers) + 1:02d}"
    _markers.append(place)
    return token


def _item(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _base(tsyntax: str, sop_class: str = "1.2.840.10008.5.1.4.1.1.1", modality: str = "CR") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = tsyntax
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.SourceApplicationEntityTitle = m("file meta: source AE title")
    ds.file_meta.add_new(0x00020100, "UI", "1.2.3.4")
    ds.file_meta.add_new(0x00020102, "OB", m("file meta: private information").encode())
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.BurnedInAnnotation = "NO"
    return ds


def _image_module(ds: Dataset, rows: int = 64, cols: int = 64) -> None:
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"


def _plant_header(ds: Dataset) -> None:
    """Markers in every kind of header place."""
    ds.PatientName = f"{m('PatientName')}^JANE"
    ds.PatientID = m("PatientID")
    ds.AccessionNumber = m("AccessionNumber")
    ds.InstitutionName = m("InstitutionName")
    ds.ReferringPhysicianName = m("ReferringPhysicianName")
    ds.StudyDescription = m("StudyDescription")
    ds.SeriesDescription = m("SeriesDescription")
    ds.ImageComments = m("ImageComments")
    ds.DerivationDescription = m("DerivationDescription (ST)")
    ds.StationName = m("StationName")
    ds.Manufacturer = m("Manufacturer (kept in v1)")
    ds.ManufacturerModelName = m("ManufacturerModelName (kept in v1)")
    ds.BodyPartExamined = f"CHEST {m('BodyPartExamined free text (CS)')}"
    ds.ViewPosition = m("ViewPosition not an allowed value (CS)")
    ds.ImageType = ["ORIGINAL", "PRIMARY", m("ImageType third value (CS)")]
    ds.ConversionType = m("unlisted CS ConversionType")
    ds.RescaleType = m("RescaleType free text (LO, kept in v1)")
    ds.WindowCenterWidthExplanation = m("WindowCenterWidthExplanation")
    ds.add_new(0x00091010, "LO", m("private tag value"))
    ds.add_new(0x00090010, "LO", m("private creator"))
    ds.add_new(0x00189990, "LO", m("unknown public tag, LO"))
    ds.add_new(0x00189992, "UN", m("unknown public tag, UN").encode())
    ds.add_new(0x00189994, "OB", m("unknown public tag, OB").encode())
    ds.add_new(0x00282000, "OB", m("ICC profile (OB)").encode())
    ds.add_new(0xFFFCFFFC, "OB", m("data set trailing padding").encode())
    ds.add_new(0x60000022, "LO", m("overlay description"))
    ds.add_new(0x60003000, "OW", m("overlay data").encode() + b"\x00")
    ds.add_new(0x60023000, "OW", m("second overlay group data").encode() + b"\x00")
    ds.add_new(0x50003000, "OW", m("curve data").encode() + b"\x00")
    ds.OtherPatientIDsSequence = Sequence([_item(PatientID=m("OtherPatientIDsSequence item"))])
    ds.AnatomicRegionSequence = Sequence([_item(CodeValue="T-D3000", CodingSchemeDesignator="SRT",
                                                CodeMeaning=m("CodeMeaning in AnatomicRegionSequence"))])
    deep = _item(TextValue=m("TextValue at depth 3"))
    deep.add_new(0x00111010, "LO", m("private tag at depth 3"))
    ds.add_new(0x00409999, "SQ", Sequence([_item(ContentSequence=Sequence([deep]),
                                                 PatientComments=m("unknown sequence item"))]))
    ref = _item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.1", ReferencedSOPInstanceUID=generate_uid(),
                ConceptNameCodeSequence=Sequence([_item(CodeMeaning=m("CodeMeaning inside a kept sequence"))]))
    ref.add_new(0x00189996, "LO", m("unknown tag inside a kept sequence"))
    ds.ReferencedImageSequence = Sequence([ref])
    ds.VOILUTSequence = Sequence([_item(LUTDescriptor=[2, 0, 8], LUTData=b"\x00\x01",
                                        LUTExplanation=m("LUTExplanation in VOILUTSequence"))])
    ds.RequestAttributesSequence = Sequence([_item(RequestedProcedureDescription=m("request attributes"))])
    icon = _item(Rows=1, Columns=5, BitsAllocated=8)
    icon.add_new(0x7FE00010, "OB", m("icon pixels").encode() + b"\x00")
    ds.IconImageSequence = Sequence([icon])


def _jpeg_with_segments() -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    body = jpeg[2:]
    if body.startswith(b"\xff\xe0"):  # Pillow writes a JFIF APP0: keep it, plant after it
        app0_len = int.from_bytes(body[2:4], "big")
        head, body = body[:2 + app0_len], body[2 + app0_len:]
    else:
        head = b""

    def segment(marker: bytes, payload: bytes) -> bytes:
        return marker + struct.pack(">H", len(payload) + 2) + payload

    com = segment(b"\xff\xfe", f"scanned by {m('JPEG COM segment')}".encode())
    app1 = segment(b"\xff\xe1", b"Exif\x00\x00" + m("JPEG APP1 segment").encode())
    app12 = segment(b"\xff\xec", m("JPEG APP12 segment").encode())
    trailing = m("bytes after JPEG EOI").encode()
    return b"\xff\xd8" + head + com + app1 + app12 + body + trailing


def _write_files(src: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    folder = src / f"patient_{m('source folder name')}"
    folder.mkdir(parents=True)

    jpeg = _base(JPEGBaseline8Bit)
    _image_module(jpeg)
    _plant_header(jpeg)
    jpeg.preamble = m("preamble").encode().ljust(128, b"\x00")
    jpeg.PixelData = encapsulate([_jpeg_with_segments()])
    jpeg["PixelData"].VR = "OB"
    files["jpeg"] = folder / f"{m('source file name')}.dcm"
    jpeg.save_as(files["jpeg"], enforce_file_format=True)

    native = _base(ExplicitVRLittleEndian)
    _image_module(native)
    native.PatientName = m("PatientName of the native file")
    native.PixelData = np.arange(64 * 64, dtype=np.uint16).astype(np.uint8).tobytes() + \
        m("native bytes past the image").encode() + b"\x00"
    files["native"] = folder / "native.dcm"
    native.save_as(files["native"], enforce_file_format=True)

    rle = _base(ExplicitVRLittleEndian)
    _image_module(rle)
    rle.PixelData = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8).tobytes()
    rle.compress(RLELossless, generate_instance_uid=False)
    frame = next(pydicom.encaps.generate_frames(rle.PixelData, number_of_frames=1))
    rle.PixelData = encapsulate([frame + m("bytes after the RLE segments").encode()])
    files["rle"] = folder / "rle.dcm"
    rle.save_as(files["rle"], enforce_file_format=True)

    pdf = _base(ExplicitVRLittleEndian, sop_class="1.2.840.10008.5.1.4.1.1.104.1", modality="DOC")
    pdf.DocumentTitle = m("encapsulated PDF title")
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.EncapsulatedDocument = b"%PDF-1.4\n(" + m("encapsulated PDF text").encode() + b")\n%%EOF\n"
    files["pdf"] = folder / "report.dcm"
    pdf.save_as(files["pdf"], enforce_file_format=True)
    return files


def _all_inputs(src: Path) -> tuple[bytes, str]:
    paths = sorted(p for p in src.rglob("*"))
    return b"".join(p.read_bytes() for p in paths if p.is_file()), "\n".join(str(p) for p in paths)


def test_planted_markers_in_59_places_none_survive(tmp_path):
    _markers.clear()
    src, out = tmp_path / "in", tmp_path / "out"
    files = _write_files(src)
    key_file = tmp_path / "deid.key"
    key_file.write_text(KEY_TEXT, encoding="utf-8")
    tokens = [f"QZM{i + 1:02d}" for i in range(len(_markers))]
    assert len(tokens) >= 59

    data, names = _all_inputs(src)
    missing = [(t, place) for t, place in zip(tokens, _markers, strict=True) if t.encode() not in data and t not in names]
    assert not missing, f"planting failed: {missing}"

    summary = run_deid(src, out, key_file=key_file, progress=False)
    assert summary.failed == () and summary.files_written == len(files)
    released = [p for p in out.rglob("*") if p.is_file() and p.name != FAILED_NAME]
    out_bytes = b"".join(p.read_bytes() for p in released)
    out_names = "\n".join(str(p.relative_to(out)) for p in out.rglob("*"))
    left = [(t, place) for t, place in zip(tokens, _markers, strict=True)
            if t.encode() in out_bytes or t in out_names]
    assert left == [], f"{len(left)} of {len(tokens)} markers survived: {left}"

    # the images are still the images
    written = [pydicom.dcmread(p) for p in sorted(out.rglob("*.dcm"))]
    (new_jpeg,) = [ds for ds in written if ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit]
    np.testing.assert_array_equal(new_jpeg.pixel_array, pydicom.dcmread(files["jpeg"]).pixel_array)
    assert b"\xff\xfe" not in new_jpeg.PixelData and b"Exif" not in new_jpeg.PixelData
    images = [ds for ds in written if ds is not new_jpeg and "PixelData" in ds]
    assert len(images) == 2  # native and RLE, both now native Explicit VR Little Endian, cut to size
    assert all(ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and len(ds.PixelData) == 64 * 64
               for ds in images)
    rle_pixels = pydicom.dcmread(files["rle"]).pixel_array
    assert any(np.array_equal(ds.pixel_array, rle_pixels) for ds in images)
    outputs = {str(ds.get("Modality", "")) for ds in written}
    assert "DOC" in outputs  # the PDF instance is written, emptied of its document
    review = [json.loads(line) for line in (out / "needs_pixel_review.jsonl").read_text().splitlines()]
    assert review == []  # BurnedInAnnotation NO, CR, every encoding rebuilt


@pytest.mark.parametrize(("modality", "burned", "flagged"),
                         [("US", "NO", True), ("SC", "NO", True), ("XC", None, True), ("CR", "NO", False),
                          ("CR", "YES", True), ("CR", None, True)])
def test_burned_in_text_modalities_are_flagged(modality, burned, flagged):
    from compliance.deid_recipe import load_recipe
    from dicom_io.deid import FLAG_BURNED_IN_MODALITY, deidentify

    ds = _base(ExplicitVRLittleEndian, modality=modality)
    _image_module(ds, 4, 4)
    ds.PixelData = bytes(16)
    if burned is None:
        del ds.BurnedInAnnotation
    else:
        ds.BurnedInAnnotation = burned
    result = deidentify(ds, load_recipe(), KEY_TEXT.encode())
    assert result.needs_pixel_review is flagged
    assert (FLAG_BURNED_IN_MODALITY in result.flags) is (modality != "CR")


def test_unparseable_jpeg_frame_is_refused_not_copied():
    from compliance.deid_recipe import load_recipe
    from dicom_io.deid import deidentify
    from dicom_io.errors import DeidentificationError

    ds = _base(JPEGBaseline8Bit)
    _image_module(ds, 4, 4)
    ds.PixelData = encapsulate([b"not a jpeg at all, PATIENT NAME"])
    with pytest.raises(DeidentificationError, match="pixel data could not be rebuilt"):
        deidentify(ds, load_recipe(), KEY_TEXT.encode())
