"""Bounded cost per file: bombs and zero-filled files are refused from the header, before any decode."""

from __future__ import annotations

import struct
import time
import zlib

import pydicom
import pytest
from _bombs import jpeg_bomb, rle_bomb, sparse_zeros

from dicom_io.errors import DicomReadError, ImageTooLarge, PixelDataError
from dicom_io.gate import load_chest_image
from dicom_io.limits import ENV_FRAMES, Limits, check_pixel_budget, sniff
from dicom_io.reader import get_data, load_image, read

FAST_S = 1.0


def test_jpeg_bomb_is_refused_from_the_header(tmp_path):
    path = jpeg_bomb(tmp_path / "bomb.dcm")
    assert 100_000 < path.stat().st_size < 160_000
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge) as info:
        load_chest_image(path, size=64)
    assert time.perf_counter() - start < FAST_S
    assert info.value.setting == "max_frame_pixels" and "MEDVLM_MAX_FRAME_PIXELS" in str(info.value)
    assert "16383x16384" in info.value.detail and info.value.code == "image_too_large"


def test_rle_bomb_is_refused_by_pixels_and_by_ratio(tmp_path):
    path = rle_bomb(tmp_path / "rle.dcm")
    assert path.stat().st_size < 20_000
    with pytest.raises(ImageTooLarge) as info:
        load_chest_image(path)
    assert info.value.setting == "max_frame_pixels"
    # with the pixel cap lifted, RLE's own 64:1 limit still refuses it without decoding
    with pytest.raises(ImageTooLarge) as info:
        get_data(read(path), limits=Limits(max_frame_pixels=2**40))
    assert info.value.setting == "max_compression_ratio"


def test_viewer_enforces_the_same_caps(tmp_path):
    from dashboard.viewer import ViewerError, load_viewer_image

    for path in (jpeg_bomb(tmp_path / "a.dcm"), rle_bomb(tmp_path / "b.dcm")):
        start = time.perf_counter()
        with pytest.raises(ViewerError, match="max_frame_pixels"):
            load_viewer_image(path)
        assert time.perf_counter() - start < FAST_S


@pytest.mark.parametrize("name", ["zeros.dcm", "zeros", "zeros.png", "zeros.jpg"])
def test_zero_filled_files_are_refused_in_milliseconds(tmp_path, name):
    path = sparse_zeros(tmp_path / name, 150 * 2**20)
    start = time.perf_counter()
    with pytest.raises(DicomReadError, match="not a"):
        load_chest_image(path)
    assert time.perf_counter() - start < FAST_S


def test_zeros_after_a_valid_header_are_refused_fast(tmp_path, make_chest_dicom):
    data = make_chest_dicom("ok.dcm").read_bytes()
    cut_at_pixels = data[: data.index(b"\xe0\x7f\x10\x00")]
    meta_end = data.index(b"\x08\x00")  # the first data set element after the File Meta group
    for name, head in (("after_header.dcm", cut_at_pixels), ("after_meta.dcm", data[:meta_end])):
        path = sparse_zeros(tmp_path / name, 120 * 2**20, head)
        start = time.perf_counter()
        with pytest.raises(DicomReadError):
            load_chest_image(path)
        assert time.perf_counter() - start < FAST_S, name


def test_sniff_accepts_real_formats_and_refuses_the_rest(tmp_path, pydicom_data_file, make_chest_dicom):
    assert sniff(make_chest_dicom("a.dcm")) == "dicom"
    assert sniff(pydicom_data_file("ExplVR_LitEndNoMeta.dcm")) == "dicom"  # no preamble, explicit VR
    assert sniff(pydicom_data_file("ExplVR_BigEndNoMeta.dcm")) == "dicom"
    implicit = pydicom_data_file("MR_small_implicit.dcm").read_bytes()
    raw = tmp_path / "raw_implicit"
    raw.write_bytes(implicit[implicit.index(b"DICM") + 4:][implicit[132:].index(b"\x08\x00"):])
    assert sniff(raw) == "dicom"  # implicit VR, no preamble, no meta
    png = tmp_path / "x.dcm"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert sniff(png) == "png"
    with pytest.raises(DicomReadError, match="PNG image, not DICOM"):
        read(png)
    for junk in (b"PatientName=DOE", b"\x00" * 300, b"\x00" * 128 + b"DICM" + b"\x00" * 50):
        path = tmp_path / "junk.dcm"
        path.write_bytes(junk)
        with pytest.raises(DicomReadError):
            read(path)


def test_png_declaring_a_huge_image_is_refused_before_decoding(tmp_path):
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
                     + chunk(b"IEND", b""))
    with pytest.raises(ImageTooLarge) as info:
        load_image(path)
    assert info.value.setting == "max_frame_pixels"


def test_declared_size_is_checked_against_the_bytes(make_chest_dicom):
    ds = pydicom.dcmread(make_chest_dicom("a.dcm"))
    check_pixel_budget(ds, limits=Limits())  # 64 x 64 x 16 bit = 8192 bytes: fine
    ds.PixelData = ds.PixelData[:4000]
    with pytest.raises(PixelDataError, match="4,000 bytes, the header declares 8,192"):
        check_pixel_budget(ds, limits=Limits())
    ds.PixelData = b"\x00" * 200_000
    with pytest.raises(PixelDataError, match="far more"):
        check_pixel_budget(ds, limits=Limits())


def test_frame_cap_comes_from_the_environment(pydicom_data_file, monkeypatch):
    path = pydicom_data_file("emri_small.dcm")  # 10 frames
    assert load_image(path)[1].number_of_frames == 10
    monkeypatch.setenv(ENV_FRAMES, "4")
    with pytest.raises(ImageTooLarge, match="10 frames exceed max_frames 4") as info:
        load_image(path)
    assert info.value.setting == "max_frames" and ENV_FRAMES in info.value.hint
    monkeypatch.setenv(ENV_FRAMES, "many")
    with pytest.raises(ValueError, match=ENV_FRAMES):
        Limits.from_env()
    with pytest.raises(ValueError, match="max_frames"):
        Limits(max_frames=0)


def test_codestream_larger_than_the_header_is_refused_before_decoding(tmp_path):
    # decoders size their work by the JPEG SOF / J2K SIZ, not Rows/Columns (found by the 10,000-file fuzz)
    path = jpeg_bomb(tmp_path / "inner.dcm", rows=20000, cols=20000)
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 512
    ds.save_as(path)
    start = time.perf_counter()
    with pytest.raises(PixelDataError, match="a compressed frame declares 20000x20000 pixels, the header 512x512"):
        load_chest_image(path)
    assert time.perf_counter() - start < FAST_S
