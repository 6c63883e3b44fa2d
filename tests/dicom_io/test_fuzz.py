"""Bad input: mutated bytes of real files, decompression bombs, zero-filled files and pydicom's
malformed test files give only typed errors, each file in bounded time and memory.

Any exception that is not a `DicomIOError` subclass fails the test (a bare traceback in a batch).
The default run fuzzes `CASES` files; the `slow` run fuzzes `BIG_CASES` (>= 10,000) and prints its
seconds and peak RSS (`resource.getrusage`).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import pytest
from _bombs import jpeg_bomb, rle_bomb, sparse_zeros

from dicom_io.errors import DicomIOError, DicomReadError, PixelDataError
from dicom_io.gate import check_dataset
from dicom_io.reader import get_data, header_meta, load_image, read

SEEDS_FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm",
               "emri_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG-LL.dcm", "emri_small_RLE.dcm"]
CASES = 400
BIG_CASES = 10_000
PER_FILE_S = 2.0  # the slowest single file (a pydicom RLE/J2K decode of a seed is ~0.1 s)
PEAK_RSS_MB = 1500  # the process's peak, pytest and the seeds included; a bomb decoded would be > 2 GB


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = int(rng.integers(5))
    header = min(len(buf), 2048)
    if kind == 0:  # flip bytes, half of the time inside the header
        for _ in range(int(rng.integers(1, 20))):
            limit = header if rng.random() < 0.5 else len(buf)
            buf[int(rng.integers(limit))] = int(rng.integers(256))
    elif kind == 1:  # truncate
        del buf[int(rng.integers(1, len(buf))):]
    elif kind == 2:  # drop a chunk
        start = int(rng.integers(len(buf)))
        del buf[start:start + int(rng.integers(1, 256))]
    elif kind == 3:  # insert random bytes
        pos = int(rng.integers(len(buf)))
        buf[pos:pos] = rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    else:  # a huge length field or VR garbage in the header
        pos = int(rng.integers(132, max(133, header - 4)))
        buf[pos:pos + 4] = bytes(rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"ZZ\xff\x7f"]))
    return bytes(buf)


def _exercise(path: Path) -> str:
    """Everything the ingest does with a file; returns 'ok' or the error class name."""
    try:
        ds = read(path)
        check_dataset(ds, header_meta(ds, path))
    except DicomIOError as exc:
        if exc.code != "not_chest_radiograph":
            return type(exc).__name__
    try:
        pixels, _ = load_image(path, size=32)
    except DicomIOError as exc:
        return type(exc).__name__
    assert pixels.shape == (32, 32) and np.isfinite(pixels).all()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    return "ok"


def _hostile(case: int, rng: np.random.Generator, path: Path, seed: bytes) -> None:
    """Every 10th case: a bomb or a zero-filled file instead of a mutated seed."""
    kind = (case // 10) % 5
    if kind == 0:
        jpeg_bomb(path, rows=int(rng.integers(8193, 65536)), cols=int(rng.integers(8193, 65536)))
    elif kind == 1:
        rle_bomb(path, rows=int(rng.integers(8193, 65536)), cols=int(rng.integers(8193, 65536)))
    elif kind == 2:
        sparse_zeros(path, int(rng.integers(1, 400)) * 2**20)  # 1-400 MB of zeros
    elif kind == 3:  # a real header, then zeros where the pixel data should be
        sparse_zeros(path, int(rng.integers(1, 200)) * 2**20, seed[: max(seed.find(b"\xe0\x7f\x10\x00"), 132)])
    else:  # DICM and the File Meta group, then zeros
        sparse_zeros(path, int(rng.integers(1, 200)) * 2**20, seed[:seed.find(b"\x08\x00", 132)])


def _fuzz(cases: int, pydicom_data_file, tmp_path: Path) -> tuple[dict[str, int], float, tuple[float, str]]:
    """Run `cases` files through `_exercise`; returns (outcomes, seconds, (slowest file seconds, which))."""
    rng = np.random.default_rng(1234)
    originals = [pydicom_data_file(name).read_bytes() for name in SEEDS_FILES]
    outcomes: dict[str, int] = {}
    slowest = (0.0, "")
    start = time.perf_counter()
    for case in range(cases):
        data = originals[case % len(originals)]
        path = tmp_path / f"case{case}.dcm"
        if case % 10 == 9:
            _hostile(case, rng, path, data)
        else:
            path.write_bytes(_mutate(data, rng))
        t0 = time.perf_counter()
        try:
            outcome = _exercise(path)
        except Exception as exc:  # noqa: BLE001 - this is what the test hunts for
            pytest.fail(f"case {case} ({SEEDS_FILES[case % len(originals)]}) raised untyped {type(exc).__name__}: {exc}")
        took = time.perf_counter() - t0
        if took > slowest[0]:
            slowest = (took, f"case {case} ({SEEDS_FILES[case % len(originals)]}, {outcome})")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        path.unlink()
    return outcomes, time.perf_counter() - start, slowest


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _check(outcomes: dict[str, int], cases: int, slowest: tuple[float, str]) -> None:
    assert sum(outcomes.values()) == cases
    assert outcomes.get("ok", 0) > 0 and len(outcomes) > 1  # both paths were exercised
    assert outcomes.get("ImageTooLarge", 0) >= cases // 50  # every bomb was refused as such
    assert slowest[0] < PER_FILE_S, f"{slowest[1]} took {slowest[0]:.2f}s"
    assert _peak_rss_mb() < PEAK_RSS_MB, f"peak RSS {_peak_rss_mb():.0f} MB"


def test_fuzzed_files_give_only_typed_errors(pydicom_data_file, tmp_path):
    outcomes, elapsed, slowest = _fuzz(CASES, pydicom_data_file, tmp_path)
    _check(outcomes, CASES, slowest)
    assert elapsed < 40, f"fuzzing took {elapsed:.1f}s"


@pytest.mark.slow
def test_ten_thousand_fuzzed_files_bounded_in_time_and_memory(pydicom_data_file, tmp_path, capsys):
    outcomes, elapsed, slowest = _fuzz(BIG_CASES, pydicom_data_file, tmp_path)
    _check(outcomes, BIG_CASES, slowest)
    with capsys.disabled():
        print(f"\nfuzz: {BIG_CASES} files in {elapsed:.1f}s, slowest {slowest[0]:.2f}s ({slowest[1]}), "
              f"peak RSS {_peak_rss_mb():.0f} MB, outcomes {dict(sorted(outcomes.items()))}")
    assert elapsed < 900


# What each of pydicom's malformed test files gives (documented behaviour, not just "no crash").
MALFORMED = [
    ("no_meta.dcm", DicomReadError),  # no preamble, no meta, not parseable as a data set
    ("ExplVR_LitEndNoMeta.dcm", PixelDataError),  # no preamble/meta: parsed, but it has no pixel data
    ("ExplVR_BigEndNoMeta.dcm", PixelDataError),  # same, big endian
    ("meta_missing_tsyntax.dcm", PixelDataError),  # pixel data but no Rows/Columns
    ("rtplan_truncated.dcm", PixelDataError),  # truncated, and not an image
    ("MR_truncated.dcm", PixelDataError),  # pixel data shorter than Rows x Columns
    ("emri_small_jpeg_2k_lossless_too_short.dcm", PixelDataError),  # pixel data element cut off
    ("bad_sequence.dcm", None),  # malformed sequence pydicom tolerates: decoded
    ("badVR.dcm", PixelDataError),  # a non-numeric value where a number is required (see the fallback test)
    ("README.txt", DicomReadError),  # not DICOM at all
]


@pytest.mark.parametrize(("name", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_named_malformed_files(pydicom_data_file, name, expected):
    path = pydicom_data_file(name)
    if expected is None:
        pixels, meta = load_image(path)
        assert pixels.ndim == 2 and meta.original_shape == pixels.shape
    else:
        with pytest.raises(expected) as info:
            get_data(read(path), path=path)
        if "NoMeta" in name:
            assert "SOPInstanceUID" in read(path)  # the no-preamble reader did parse it
        assert str(path) in str(info.value) and info.value.hint


def test_simpleitk_rescues_what_pydicom_cannot_decode_when_asked(pydicom_data_file):
    path = pydicom_data_file("badVR.dcm")
    pixels, meta = get_data(read(path), path=path, fallback_on_error=True)
    assert meta.decoder == "simpleitk" and pixels.shape == (10, 10)
