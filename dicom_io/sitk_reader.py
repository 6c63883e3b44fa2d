"""SimpleITK, the second reader: a decode fallback and anti-aliased resampling.

SimpleITK (GDCM inside) is imported inside the functions: `import dicom_io` stays light.

`read_pixels` is used when pydicom cannot decode a file. Note that GDCM applies the rescale
slope/intercept itself (modality values) and inverts MONOCHROME1 (undone here).

`resize` downsamples without aliasing: an integer block average (`BinShrink`) by about half the
factor, then a Gaussian (`SmoothingRecursiveGaussian`, sigma = (remaining factor - 1) / 2 pixels,
the usual anti-aliasing choice) and linear resampling with pixel centres aligned. Binning first
keeps the cost near one pass over the input even for a 2000 → 224 reduction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dicom_io.errors import PixelDataError


def read_pixels(path: str | Path) -> np.ndarray:
    """Decode the first frame of a DICOM file with SimpleITK.

    Args:
        path: the DICOM file.

    Returns:
        (H, W) values (GDCM applies rescale slope/intercept itself; its MONOCHROME1 inversion is
        undone here, so unsigned MONOCHROME1 data equal pydicom's stored values), or (H, W, C) for colour.

    Raises:
        PixelDataError: SimpleITK cannot read the file or its pixels.
    """
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")  # else ITK tries every format on a bad file (seconds)
        reader.SetFileName(str(path))
        image = reader.Execute()
        arr = sitk.GetArrayFromImage(image)
        photometric = reader.GetMetaData("0028|0004").strip() if reader.HasMetaDataKey("0028|0004") else ""
        bits = reader.GetMetaData("0028|0101").strip() if reader.HasMetaDataKey("0028|0101") else ""
    except RuntimeError as exc:  # SimpleITK raises RuntimeError for every ITK exception
        raise PixelDataError(path, f"SimpleITK could not decode the pixel data ({type(exc).__name__})",
                             "check the file with a DICOM validator, or re-export it uncompressed") from None
    if photometric == "MONOCHROME1" and arr.dtype.kind == "u" and bits.isdigit():
        # GDCM turns MONOCHROME1 into MONOCHROME2 as (2**BitsStored - 1) - v; undo it so that
        # both readers return stored values and the normaliser inverts exactly once
        arr = (2 ** int(bits) - 1) - arr
    if image.GetDimension() == 3 or (arr.ndim == 3 and image.GetNumberOfComponentsPerPixel() == 1) or arr.ndim == 4:
        arr = arr[0]  # (frames, H, W[, C]) -> first frame
    return np.ascontiguousarray(arr)


def _target_shape(shape: tuple[int, int], size: int | tuple[int, int], keep_aspect: bool) -> tuple[int, int]:
    if isinstance(size, int):
        if not keep_aspect:
            return size, size
        scale = size / max(shape)
        return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))
    return int(size[0]), int(size[1])


def _resample(pixels: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    import SimpleITK as sitk

    h, w = pixels.shape
    oh, ow = out_shape
    image = sitk.GetImageFromArray(np.ascontiguousarray(pixels, dtype=np.float32))
    # sitk index order is (x, y) = (column, row)
    bins = [max(1, int((w / ow) // 2)), max(1, int((h / oh) // 2))]
    if bins != [1, 1]:
        image = sitk.BinShrink(image, bins)
        image.SetSpacing((1.0, 1.0))
        image.SetOrigin((0.0, 0.0))
    bw, bh = image.GetSize()
    fx, fy = bw / ow, bh / oh
    sigma = [max(0.0, (fx - 1) / 2), max(0.0, (fy - 1) / 2)]
    if max(sigma) >= 0.3 and min(bw, bh) >= 4:
        image = sitk.SmoothingRecursiveGaussian(image, [max(s, 0.01) for s in sigma])
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize((ow, oh))
    resampler.SetOutputSpacing((fx, fy))
    # align pixel centres: input pixel i covers [i - 0.5, i + 0.5]
    resampler.SetOutputOrigin((0.5 * (fx - 1), 0.5 * (fy - 1)))
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    # when upsampling, edge output centres fall up to half a pixel outside the input grid
    resampler.SetUseNearestNeighborExtrapolator(True)
    return sitk.GetArrayFromImage(resampler.Execute(image))


def resize(pixels: np.ndarray, size: int | tuple[int, int], *, keep_aspect: bool = True) -> np.ndarray:
    """Anti-aliased resampling of a (H, W) image with SimpleITK.

    Args:
        pixels: (H, W) float image, typically in [0, 1].
        size: an int gives a (size, size) output; a (h, w) tuple gives exactly that shape.
        keep_aspect: with an int `size`, scale the long side to `size` and pad the short side
            with zeros (black), centred, instead of stretching.

    Returns:
        (size, size) or (h, w) float32, values within the input's range.

    Raises:
        ValueError: `pixels` is not 2-D or `size` is not positive.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ValueError(f"resize expects a non-empty (H, W) array, got shape {pixels.shape}")
    sizes = (size, size) if isinstance(size, int) else tuple(size)
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"size must be a positive int or (h, w), got {size!r}")
    inner = _target_shape(pixels.shape, size, keep_aspect)
    if inner == pixels.shape:
        out = pixels.astype(np.float32, copy=True)
    else:
        out = _resample(pixels, inner)
        lo, hi = float(pixels.min()), float(pixels.max())
        np.clip(out, lo, hi, out=out)
    if inner == sizes:
        return out.astype(np.float32, copy=False)
    canvas = np.zeros(sizes, dtype=np.float32)
    top, left = (sizes[0] - inner[0]) // 2, (sizes[1] - inner[1]) // 2
    canvas[top:top + inner[0], left:left + inner[1]] = out
    return canvas
