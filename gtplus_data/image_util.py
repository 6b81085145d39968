"""The one home of image conversion and PNG / BMP I/O in gtplus: HWC numpy <-> NCHW tensor, decoding, encoding, writing.

Conventions: numpy images are (H, W, 3) RGB, float32 in [0, 1] (or uint8 for figures and files); tensors are
[B, 3, H, W] (or [3, H, W] for dataset items) RGB float in [0, 1]. Everything that turns one into the other, or reads
or writes image files, lives here, so that rounding, clamping and channel order agree across tools.

Decoding (:func:`decode_image`, used by :class:`gtplus_data.image_source.ImageSource` for folders and LMDBs):

* grayscale (H, W) or (H, W, 1): the channel is replicated to RGB;
* RGBA / gray + alpha: the colour is composited over white. Transparent pixels carry undefined colour (often
  black, or whatever the encoder left), while viewers show them over a light background; compositing gives the
  picture a user sees, instead of the hidden colour that ``cv2.IMREAD_COLOR`` (BasicSR's reader) would expose;
* 16-bit: scaled to [0, 1] by dividing by 65535 (float images are clipped to [0, 1]);
* corrupt, truncated, empty or non-image data: :class:`ImageReadError`, naming the path (and key).

Windows of uncompressed BMPs (:func:`bmp_pixel_view`) are read without decoding the whole image: a training loader
that crops converts only the crop, through the same :func:`pixels_to_rgb_float` as :func:`decode_image`, so the
pixels are exactly those of decoding the whole file and cropping.

EXIF orientation is not applied: pixels are returned as stored, as BasicSR's LMDB values are.
"""
import struct

import cv2
import numpy as np
import torch

from gtplus_data.atomic_file import atomic_write


class ImageReadError(ValueError):
    """An image that cannot be decoded (corrupt, truncated, empty or not an image). The message names its path."""


# Channel order fixes applied to the integer image (OpenCV decodes BGR(A)).
_TO_RGB = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}


def _to_unit_float(img):
    """Scale an integer or float array to float32 in [0, 1] by the range of its dtype."""
    if img.dtype in (np.uint8, np.uint16):
        out = img.astype(np.float32)
        out /= 255. if img.dtype == np.uint8 else 65535.  # in place: one float buffer per image
        return out
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(img.astype(np.float32), 0, 1)
    raise TypeError(f'unsupported pixel type {img.dtype}')


def _to_rgb(img):
    """(H, W), (H, W, 1), (H, W, 2) gray+alpha, (H, W, 3) RGB or (H, W, 4) RGBA float [0,1] -> (H, W, 3) RGB."""
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels in (2, 4):
        # Composite over white (see the module docstring for why).
        colour, alpha = img[:, :, :channels - 1], img[:, :, channels - 1:]
        img = colour * alpha + (1. - alpha)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def decode_image(data, name):
    """Decode encoded image bytes into an RGB float image.

    Args:
        data (bytes): the encoded file (PNG, JPEG, BMP, TIFF, WebP).
        name (str): the path (and key) to name in errors.

    Returns:
        np.ndarray: (H, W, 3) float32 RGB in [0, 1].

    Raises:
        ImageReadError: if ``data`` is empty, truncated, corrupt or not an image.
    """
    if not data:
        raise ImageReadError(f'empty image file: {name}')
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0 or img.ndim not in (2, 3):
        raise ImageReadError(f'cannot decode image (corrupt, truncated or not an image): {name}')
    return pixels_to_rgb_float(img, name)


def pixels_to_rgb_float(img, name):
    """Decoded pixels in OpenCV's channel order -> RGB float (the conversion of :func:`decode_image`).

    Args:
        img (np.ndarray): (H, W) gray, (H, W, 1), (H, W, 2) gray + alpha, (H, W, 3) BGR or (H, W, 4) BGRA; uint8,
            uint16 or float. May be a read-only or strided view (a crop window): it is never written to.
        name (str): the path (and key) to name in errors.

    Returns:
        np.ndarray: (H, W, 3) float32 RGB in [0, 1], a new C-contiguous array.
    """
    if img.ndim == 3 and img.shape[2] in _TO_RGB:
        # Swap on the integer pixels, where it costs least; a strided window is first copied as integers (fast),
        # because numpy's float conversion of a strided view is about ten times slower than of a contiguous one.
        img = cv2.cvtColor(np.ascontiguousarray(img), _TO_RGB[img.shape[2]])
    try:
        return _to_rgb(_to_unit_float(img)).astype(np.float32, copy=False)
    except TypeError as error:
        raise ImageReadError(f'{error}: {name}') from error


def bmp_pixel_view(data):
    """The pixels of an uncompressed 24-bit BMP as a zero-copy view into its bytes, for reading windows of it.

    Reads the header as OpenCV does: pixel data at the offset in bytes 10-13, a BITMAPINFOHEADER or later (size at
    14-17 >= 40), width and height (signed; a negative height is a top-down image) at 18-25, one plane, 24 bits per
    pixel at 28-29, compression 0 (BI_RGB) at 30-33; rows are stored bottom-up unless top-down, each padded to 4
    bytes.

    Args:
        data (bytes | memoryview): the encoded file, for example a zero-copy memoryview into an LMDB map (the view
            is only valid as long as ``data`` is).

    Returns:
        np.ndarray | None: (H, W, 3) read-only uint8 BGR view, top row first, so that
        ``pixels_to_rgb_float(view[t:b, l:r], name)`` equals ``decode_image(data, name)[t:b, l:r]`` bit for bit;
        None for anything else (not a BMP, paletted, 16- or 32-bit, compressed, an OS/2 header, truncated), which
        :func:`decode_image` reads instead.
    """
    if len(data) < 54 or bytes(data[:2]) != b'BM':
        return None
    offset, header_size, width, height, planes, bits, compression = struct.unpack('<IIiiHHI', bytes(data[10:34]))
    if header_size < 40 or planes != 1 or bits != 24 or compression != 0 or width <= 0 or height == 0:
        return None
    rows, row_bytes = abs(height), (3 * width + 3) // 4 * 4
    if offset < 14 + header_size or len(data) < offset + rows * row_bytes:
        return None
    pixels = np.frombuffer(data, np.uint8, count=rows * row_bytes, offset=offset).reshape(rows, row_bytes)
    pixels = pixels[:, :3 * width].reshape(rows, width, 3)  # drop the row padding (a view: rows keep their stride)
    return pixels if height < 0 else pixels[::-1]


def to_uint8(img):
    """HxWx3 RGB uint8, uint16 or float [0,1] -> uint8 (floats rounded once, 16-bit scaled by 255/65535)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.
    return (np.clip(img, 0, 1) * 255.).round().astype(np.uint8)


def _to_bgr_uint8(img):
    """(H, W, 3) RGB uint8 / uint16 / float [0,1] -> contiguous (H, W, 3) BGR uint8, the layout OpenCV encodes."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {img.shape}')
    return np.ascontiguousarray(to_uint8(img)[:, :, ::-1])


def encode_png(img, compress_level=1):
    """Encode an RGB image as PNG.

    Args:
        img (np.ndarray): (H, W, 3) RGB, uint8, uint16 or float in [0, 1].
        compress_level (int | None): PNG compression 0-9; None: OpenCV's default settings (setting a level also
            changes OpenCV's PNG strategy, so the bytes differ from an unset level even at the same number).

    Returns:
        bytes: 8-bit PNG, BGR inside (as OpenCV and BasicSR expect).
    """
    params = [] if compress_level is None else [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)]
    ok, encoded = cv2.imencode('.png', _to_bgr_uint8(img), params)
    if not ok:
        raise RuntimeError('OpenCV failed to encode a PNG')
    return encoded.tobytes()


def encode_bmp(img):
    """Encode an RGB image as an uncompressed 24-bit BMP (lossless; about 3 bytes per pixel plus a 54-byte header).

    Decoding it is little more than a copy (no zlib inflate, unlike PNG even at compression 0), which is why
    LMDBs that a training loader reads over and over may store BMP (see :mod:`gtplus_data.lmdb_writer`).

    Args:
        img (np.ndarray): (H, W, 3) RGB, uint8, uint16 or float in [0, 1].

    Returns:
        bytes: 8-bit BMP, BGR inside (as OpenCV and BasicSR expect); ``cv2.imdecode`` returns the same pixels as
        from :func:`encode_png`.
    """
    ok, encoded = cv2.imencode('.bmp', _to_bgr_uint8(img))
    if not ok:
        raise RuntimeError('OpenCV failed to encode a BMP')
    return encoded.tobytes()


IMAGE_ENCODERS = {'png': encode_png, 'bmp': lambda img, compress_level=None: encode_bmp(img)}


def encode_image(img, encoding='png', compress_level=1):
    """Encode an RGB image as ``encoding``.

    Args:
        img (np.ndarray): (H, W, 3) RGB, uint8, uint16 or float in [0, 1].
        encoding (str): 'png' or 'bmp' (the keys of ``IMAGE_ENCODERS``).
        compress_level (int | None): PNG compression 0-9 (ignored for BMP, which is never compressed).

    Returns:
        bytes: the 8-bit encoded image, BGR inside.
    """
    if encoding not in IMAGE_ENCODERS:
        raise ValueError(f'unknown image encoding {encoding!r}; choose one of {", ".join(IMAGE_ENCODERS)}')
    return IMAGE_ENCODERS[encoding](img, compress_level=compress_level)


def write_png(path, img, compress_level=None):
    """Write an RGB image as PNG atomically (:func:`gtplus_data.atomic_file.atomic_write`), creating the folder.

    Args:
        path (str): the PNG path.
        img (np.ndarray): (H, W, 3) RGB, uint8, uint16 or float in [0, 1].
        compress_level (int | None): PNG compression 0-9 (None: OpenCV's defaults, as ``cv2.imwrite``).

    Returns:
        str: ``path``.

    Raises:
        OSError: naming ``path`` (a parent that is a file, a full disk); nothing is left under ``path`` or beside it.
    """
    return atomic_write(path, encode_png(img, compress_level))


def chw_tensor(img):
    """(H, W, 3) float32 RGB [0,1] -> Tensor[3, H, W] float RGB [0,1], a view of ``img`` (possibly strided, e.g.
    of a rotated crop): a DataLoader's collate makes the one copy into the batch, and a strided copy costs a third
    of copying to contiguous HWC first. Only negative strides, which torch cannot view, are copied here."""
    if any(stride < 0 for stride in img.strides):
        img = np.ascontiguousarray(img)
    return torch.from_numpy(img.transpose(2, 0, 1)).float()


def image_to_tensor(img, device='cpu'):
    """(H, W, 3) float32 RGB [0,1] -> Tensor[1, 3, H, W] float on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float().to(device)


def tensor_to_image(tensor):
    """Tensor[1, 3, H, W] or [3, H, W] -> (H, W, 3) float32 RGB numpy, clamped to [0, 1] (first item of a batch)."""
    tensor = tensor.detach()
    tensor = tensor[0] if tensor.dim() == 4 else tensor
    return tensor.clamp(0, 1).float().cpu().numpy().transpose(1, 2, 0)


def tensor_to_uint8(tensor):
    """Tensor[1, 3, H, W] or [3, H, W] in [0, 1] -> (H, W, 3) uint8 RGB (clamped, rounded once)."""
    return to_uint8(tensor_to_image(tensor))


def bgr_image_to_tensor(img, crop_border=0, input_order='HWC'):
    """A BasicSR metric image (``tensor2img`` output) -> Tensor[1, 3, H, W] RGB in [0, 1].

    Args:
        img (ndarray): HxWx3 (or 3xHxW with input_order 'CHW') BGR in [0,255], uint8 or float; HxW gray allowed.
        crop_border (int): pixels removed from each edge (as basicsr's metrics do).
        input_order (str): 'HWC' or 'CHW'.
    """
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif input_order == 'CHW':
        img = img.transpose(1, 2, 0)
    if img.shape[2] != 3:
        raise ValueError(f'expected a 3-channel BGR image, got shape {img.shape}')
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    rgb = img[..., ::-1].astype(np.float32) / 255.
    return torch.from_numpy(np.ascontiguousarray(rgb.clip(0, 1))).permute(2, 0, 1)[None]
