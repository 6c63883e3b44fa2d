"""Reading and decoding: every transfer syntax family, RG1 encodings agree, SimpleITK agrees, typed errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.errors import DicomReadError, PixelDataError, UnsupportedTransferSyntax
from dicom_io.reader import get_data, load_image, plugin_for, read
from dicom_io.sitk_reader import read_pixels, resize

TRANSFER_SYNTAX_FILES = [
    ("MR_small_implicit.dcm", "1.2.840.10008.1.2"),  # implicit VR little endian
    ("MR_small.dcm", "1.2.840.10008.1.2.1"),  # explicit VR little endian
    ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),  # explicit VR big endian
    ("image_dfl.dcm", "1.2.840.10008.1.2.1.99"),  # deflated
    ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50"),  # JPEG baseline (colour -> luminance)
    ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51"),  # JPEG extended 12-bit
    ("JPEG-LL.dcm", "1.2.840.10008.1.2.4.70"),  # JPEG lossless SV1
    ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),  # JPEG-LS lossless
    ("JPEGLSNearLossless_16.dcm", "1.2.840.10008.1.2.4.81"),  # JPEG-LS near-lossless
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),  # JPEG 2000 lossless
    ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),  # JPEG 2000
    ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),  # RLE
]


@pytest.mark.parametrize(("name", "uid"), TRANSFER_SYNTAX_FILES, ids=[n for n, _ in TRANSFER_SYNTAX_FILES])
def test_each_transfer_syntax_family_decodes(pydicom_data_file, name, uid):
    pixels, meta = load_image(pydicom_data_file(name))
    assert meta.transfer_syntax == uid
    assert meta.decoder == "pydicom"
    assert pixels.dtype == np.float32 and pixels.ndim == 2
    assert pixels.shape == meta.original_shape
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    assert pixels.std() > 0.01  # a real image, not a constant


@pytest.mark.parametrize("twin", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_lossless_encodings_of_mr_small_are_identical(pydicom_data_file, twin):
    ref = read(pydicom_data_file("MR_small.dcm")).pixel_array
    other = read(pydicom_data_file(twin)).pixel_array
    np.testing.assert_array_equal(ref, other)


def _rg1(pydicom_data_file, suffix):
    return pydicom_data_file(f"RG1_{suffix}.dcm")


def test_rg1_lossless_encodings_give_identical_pixels(pydicom_data_file):
    # NEMA test-set naming: UNCR is the original of the reversible J2KR; UNCI is the decoded
    # result of the irreversible J2KI, stored uncompressed. Lossless pairs must match bit for bit.
    raws = {s: read(_rg1(pydicom_data_file, s)).pixel_array for s in ("UNCI", "UNCR", "J2KR", "J2KI")}
    assert raws["UNCR"].shape == (1955, 1841)
    np.testing.assert_array_equal(raws["UNCR"], raws["J2KR"])
    np.testing.assert_array_equal(raws["UNCI"], raws["J2KI"])
    normed = [load_image(_rg1(pydicom_data_file, s))[0] for s in ("UNCR", "J2KR")]
    np.testing.assert_array_equal(normed[0], normed[1])


@pytest.mark.parametrize("lossy", ["J2KI", "UNCI"])
def test_rg1_lossy_j2k_is_above_35_db(pydicom_data_file, lossy):
    ds = read(_rg1(pydicom_data_file, "UNCR"))
    ref = ds.pixel_array.astype(np.float64)
    other = read(_rg1(pydicom_data_file, lossy)).pixel_array.astype(np.float64)
    peak = 2.0 ** int(ds.BitsStored) - 1
    psnr = 10 * np.log10(peak**2 / np.mean((ref - other) ** 2))
    assert psnr > 35.0
    assert not np.array_equal(ref, other)  # it really is lossy
    a, b = load_image(_rg1(pydicom_data_file, "UNCR"))[0], load_image(_rg1(pydicom_data_file, lossy))[0]
    assert 10 * np.log10(1.0 / np.mean((a - b) ** 2)) > 35.0  # after normalisation too


def test_simpleitk_and_pydicom_agree_on_rg1(pydicom_data_file):
    path = _rg1(pydicom_data_file, "UNCR")
    np.testing.assert_array_equal(read_pixels(path), read(path).pixel_array)


def test_simpleitk_fallback_when_pydicom_has_no_decoder(pydicom_data_file, monkeypatch):
    from pydicom.pixels.decoders.base import Decoder

    path = _rg1(pydicom_data_file, "J2KR")
    reference, _ = load_image(path)
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(UnsupportedTransferSyntax, match="pylibjpeg-openjpeg") as info:
        get_data(read(path), path=path, fallback=False)
    assert "JPEG 2000" in str(info.value) and str(path) in str(info.value)
    pixels, meta = get_data(read(path), path=path)
    assert meta.decoder == "simpleitk"
    np.testing.assert_allclose(pixels, reference, atol=1e-6)


def test_unknown_transfer_syntax_names_it(pydicom_data_file):
    ds = read(pydicom_data_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.94"  # JPIP referenced: no decoder exists
    with pytest.raises(UnsupportedTransferSyntax, match="JPIP") as info:
        get_data(ds, fallback=False)
    assert info.value.code == "unsupported_transfer_syntax"
    assert "transcode" in info.value.hint
    assert "pyjpegls" in plugin_for("1.2.840.10008.1.2.4.80")


def test_meta_has_no_phi(tmp_path):
    deid_data = pytest.importorskip("deid_data")
    path = Path(deid_data.__file__).parent / "data" / "humans" / "ctbrain1.dcm"
    if not path.is_file():
        pytest.skip("deid-data ctbrain1.dcm absent")
    ds = read(path)
    _, meta = get_data(ds)
    text = json.dumps(meta.to_dict())
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber"):
        value = str(ds.get(keyword, "") or "")
        if len(value) >= 3:
            assert value not in text, keyword
    assert not any(name.startswith("patient") for name in meta.to_dict())


def test_multi_frame_returns_the_requested_frame(pydicom_data_file):
    path = pydicom_data_file("emri_small.dcm")
    ds = read(path)
    first, meta = get_data(ds)
    second, meta2 = get_data(ds, frame=1)
    assert meta.number_of_frames == 10 and meta.frame_index == 0 and meta2.frame_index == 1
    assert first.shape == (64, 64) and not np.array_equal(first, second)
    with pytest.raises(PixelDataError, match="frame 10"):
        get_data(ds, frame=10)


def test_bad_inputs_raise_typed_errors_naming_the_file(tmp_path, pydicom_data_file):
    text = tmp_path / "notes.dcm"
    text.write_text("not a dicom file at all")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    for path in (text, empty, tmp_path / "missing.dcm", tmp_path):
        with pytest.raises(DicomReadError) as info:
            load_image(path)
        assert str(path) in str(info.value)
        assert info.value.hint
    with pytest.raises(PixelDataError, match="no pixel data"):
        load_image(pydicom_data_file("rtplan.dcm"))
    with pytest.raises(ValueError, match="window"):
        load_image(pydicom_data_file("CT_small.dcm"), window="bogus")


def test_load_image_resizes_keeping_aspect(pydicom_data_file):
    pixels, meta = load_image(pydicom_data_file("JPEG2000.dcm"), size=64)  # 1024 x 256
    assert pixels.shape == (64, 64) and pixels.dtype == np.float32
    assert meta.original_shape == (1024, 256)
    assert pixels[:, :24].max() == 0.0 and pixels[:, 40:].max() == 0.0  # padded columns
    assert pixels[:, 25:39].std() > 0.01


def test_resize_is_anti_aliased():
    checker = (np.indices((512, 512)).sum(axis=0) % 2).astype(np.float32)  # Nyquist-frequency pattern
    small = resize(checker, 64)
    assert small.shape == (64, 64)
    assert abs(small.mean() - 0.5) < 0.02 and small.std() < 0.05  # naive subsampling gives all 0 or all 1
    up = resize(np.full((10, 20), 0.25, np.float32), (40, 80))
    np.testing.assert_allclose(up, 0.25, atol=1e-6)
    with pytest.raises(ValueError):
        resize(np.zeros((4, 4, 3)), 8)


def test_png_import(shared_data, tmp_path):
    pixels, meta = load_image(shared_data / "images" / "00000001_000.png", size=128)
    assert pixels.shape == (128, 128) and 0 <= pixels.min() and pixels.max() <= 1
    assert meta.has_dicom_metadata is False and meta.decoder == "pillow" and meta.view == "UNKNOWN"
    assert meta.sop_uid == load_image(shared_data / "images" / "00000001_000.png")[1].sop_uid  # stable UIDs


def test_png16_and_corrupt_png(tmp_path):
    from PIL import Image

    arr = (np.arange(100 * 80, dtype=np.uint16).reshape(100, 80) * 8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    pixels, meta = load_image(tmp_path / "x.png")
    assert pixels.shape == (100, 80) and meta.window == "nominal"
    np.testing.assert_allclose(pixels, arr / 65535.0, atol=1e-6)
    bad = tmp_path / "bad.png"
    bad.write_bytes((tmp_path / "x.png").read_bytes()[:200])
    with pytest.raises((PixelDataError, DicomReadError)):
        load_image(bad)


def test_missing_transfer_syntax_is_inferred_for_native_data(pydicom_data_file):
    ds = read(pydicom_data_file("MR_small_implicit.dcm"))
    reference = ds.pixel_array.copy()
    del ds.file_meta.TransferSyntaxUID
    pixels, meta = get_data(ds)
    assert meta.transfer_syntax is None and pixels.shape == reference.shape
    assert np.corrcoef(pixels.ravel(), reference.ravel())[0, 1] > 0.99
    # the pydicom file with no transfer syntax also lacks Rows/Columns: a typed error, not a crash
    with pytest.raises(PixelDataError, match="implausible image size 0x0"):
        load_image(pydicom_data_file("meta_missing_tsyntax.dcm"))
    assert isinstance(read(pydicom_data_file("meta_missing_tsyntax.dcm")), pydicom.Dataset)


def test_import_dicom_io_stays_light():
    import subprocess
    import sys

    code = ("import sys, dicom_io; heavy = [m for m in ('torch', 'monai', 'SimpleITK', 'transformers') "
            "if m in sys.modules]; assert not heavy, heavy; assert dicom_io.load_image")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
