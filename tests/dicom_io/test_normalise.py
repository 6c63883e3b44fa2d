"""Intensity normalisation: Modality LUT, VOI LUT / window, MONOCHROME1, bit depth, window modes."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_io.normalise import normalise, normalise_range
from dicom_io.reader import load_image, read


def _header(**elements) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 12
    ds.PixelRepresentation = 0
    for key, value in elements.items():
        setattr(ds, key, value)
    return ds


def _ramp(dtype=np.uint16, lo=0, hi=4095, shape=(64, 64)) -> np.ndarray:
    return np.linspace(lo, hi, num=shape[0] * shape[1]).round().astype(dtype).reshape(shape)


def test_monochrome1_twin_is_the_inverse(shared_data):
    folder = shared_data / "dicom"
    mono2, meta2 = load_image(folder / "rsna_chest_pa_jpeg_baseline.dcm", window="minmax")
    mono1, meta1 = load_image(folder / "rsna_chest_pa_relabelled_monochrome1.dcm", window="minmax")
    assert meta1.photometric_interpretation == "MONOCHROME1"
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    # the default (auto) window too: the percentile window is symmetric under inversion
    auto1, _ = load_image(folder / "rsna_chest_pa_relabelled_monochrome1.dcm")
    auto2, _ = load_image(folder / "rsna_chest_pa_jpeg_baseline.dcm")
    np.testing.assert_allclose(auto1, 1.0 - auto2, atol=1e-6)


def test_linear_window_matches_the_dicom_formula():
    arr = _ramp()
    ds = _header(WindowCenter=2048, WindowWidth=1024)
    out, rule = normalise(arr, ds, window="window")
    assert rule == "window" and out.dtype == np.float32
    x = arr.astype(np.float64)
    expected = np.clip(((x - (2048 - 0.5)) / (1024 - 1) + 0.5), 0, 1)  # PS3.3 C.11.2.1.2.1
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_rescale_then_window_and_monochrome1():
    arr = _ramp()
    ds = _header(RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=3000, WindowWidth=2000)
    out, _ = normalise(arr, ds, window="window")
    modality = arr * 2.0 - 1000
    expected = np.clip((modality - 2999.5) / 1999 + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted, _ = normalise(arr, ds, window="window")
    np.testing.assert_allclose(inverted, 1 - expected, atol=1e-5)


def test_signed_pixels_honour_pixel_representation():
    arr = _ramp(np.int16, -2048, 2047)
    ds = _header(PixelRepresentation=1)
    out, rule = normalise(arr, ds, window="minmax")
    assert rule == "minmax"
    assert out[0, 0] == 0.0 and out[-1, -1] == 1.0
    assert np.all(np.diff(out.ravel()) >= 0)  # monotonic: -2048 is darkest, not wrapped around


def test_table_path_equals_direct_path():
    arr = _ramp()
    ds = _header(RescaleSlope=0.5, RescaleIntercept=10, WindowCenter=1000, WindowWidth=800)
    fast, _ = normalise(arr, ds, window="window")
    direct, _ = normalise(arr.astype(np.int32), ds, window="window")  # int32: no look-up table
    np.testing.assert_allclose(fast, direct, atol=1e-6)


def test_voi_lut_sequence_is_applied(pydicom_data_file):
    ds = read(pydicom_data_file("vlut_04.dcm"))
    out, rule = normalise(ds.pixel_array, ds, window="voi")
    assert rule == "voi_lut"
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.05


def test_window_modes_choose_between_lut_and_window(pydicom_data_file):
    ds = read(pydicom_data_file("vlut_04.dcm"))
    ds.WindowCenter, ds.WindowWidth = 100, 50
    assert normalise(ds.pixel_array, ds, window="voi")[1] == "voi_lut"
    assert normalise(ds.pixel_array, ds, window="window")[1] == "window"


def test_percentile_default_when_no_window():
    rng = np.random.default_rng(0)
    arr = rng.integers(1000, 3000, size=(128, 128)).astype(np.uint16)
    arr[0, :10] = 4095  # a burnt-in label must not set the white point
    out, rule = normalise(arr, _header(), window="auto")
    assert rule == "percentile"
    assert out.max() == 1.0 and out.min() == 0.0
    mid = out[arr == 2000]
    assert mid.size and abs(float(mid.mean()) - 0.5) < 0.02  # white point near 3000, not at the label's 4095


def test_auto_rejects_a_saturating_header_window():
    arr = _ramp()
    ds = _header(WindowCenter=40000, WindowWidth=10)  # far outside the data: everything black
    assert normalise(arr, ds, window="auto")[1] == "percentile"
    out, rule = normalise(arr, ds, window="window")
    assert rule == "window" and out.max() == 0.0
    ds.WindowWidth = 0  # invalid for LINEAR: auto falls back, strict raises
    assert normalise(arr, ds, window="auto")[1] == "percentile"
    with pytest.raises(ValueError):
        normalise(arr, ds, window="window")


def test_bits_stored_is_applied_by_decoding(pydicom_data_file):
    ds = read(pydicom_data_file("emri_small.dcm"))  # 12 bits stored in 16 allocated
    raw = ds.pixel_array
    assert raw.max() < 2**12
    out, _ = normalise(raw[0], ds, window="minmax")
    assert out.min() == 0.0 and out.max() == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        normalise(_ramp(), _header(), window="nope")
    with pytest.raises(ValueError, match="H, W"):
        normalise(np.zeros((2, 3, 4), np.uint16), _header())
    out, rule = normalise_range(np.full((8, 8), 7, np.uint8))
    assert rule == "percentile" and out.max() == 0.0  # a constant image stays finite
