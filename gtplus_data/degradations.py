"""Classical, deterministic degradations on numpy images (HxWx3 float32 RGB in [0,1]).

Used to build imperfect-GT tasks (quickstart, tests) and as the first stage of synthesizers. Every function takes
an explicit ``numpy.random.RandomState`` where it draws noise, so a seed reproduces an image bit for bit.

Seeds: :func:`key_seed` gives each image (key) and task its own seed, so a run's results do not depend on its order,
its sharding over ranks, or on being resumed.
"""
import zlib

import cv2
import numpy as np


def gaussian_blur(img, sigma):
    """Isotropic Gaussian blur; kernel size covers ±3σ. sigma <= 0 returns a copy."""
    if sigma <= 0:
        return img.copy()
    size = 2 * int(np.ceil(3 * sigma)) + 1
    return cv2.GaussianBlur(img, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def gaussian_noise(img, sigma_255, rng):
    """Add white Gaussian noise of std ``sigma_255``/255 and clip to [0,1]."""
    noise = rng.standard_normal(img.shape).astype(np.float32) * (sigma_255 / 255.)
    return np.clip(img + noise, 0, 1)


def jpeg(img, quality):
    """JPEG round trip at an integer quality (OpenCV 5 rejects floats). RGB in, RGB out."""
    bgr = (np.clip(img, 0, 1)[..., ::-1] * 255.).round().astype(np.uint8)
    ok, encoded = cv2.imencode('.jpg', bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(round(quality))])
    if not ok:
        raise RuntimeError('OpenCV failed to JPEG-encode the image')
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.


def resize(img, height, width):
    """Bicubic resize to (height, width), clipped to [0,1]."""
    return np.clip(cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def degrade(img, blur_sigma=0., noise_sigma=0., jpeg_quality=None, seed=0):
    """Blur, then noise, then JPEG (the usual order of a camera pipeline's losses).

    Args:
        img (ndarray): HxWx3 float32 RGB in [0,1].
        blur_sigma (float): Gaussian blur σ in pixels (0: none).
        noise_sigma (float): noise std on the 0-255 scale (0: none).
        jpeg_quality (int | None): JPEG quality, or None for no compression.
        seed (int): seed of the noise.

    Returns:
        ndarray: HxWx3 float32 RGB in [0,1].
    """
    out = gaussian_blur(img.astype(np.float32), blur_sigma)
    if noise_sigma > 0:
        out = gaussian_noise(out, noise_sigma, np.random.RandomState(seed))
    if jpeg_quality is not None:
        out = jpeg(out, jpeg_quality)
    return out.astype(np.float32)


def key_seed(seed, tag):
    """A 32-bit seed of its own for ``tag`` (e.g. ``'img0/x2'``) under a base ``seed``.

    Args:
        seed (int): the run's base seed.
        tag (str): what the draw is for, usually ``'<key>/<task>'``.

    Returns:
        int: in [0, 2**32), valid for ``numpy.random.RandomState`` and ``torch.manual_seed``.
    """
    return (int(seed) + zlib.crc32(str(tag).encode())) % 2**32


def sr_degrade(img, scale, blur_sigma=0., noise_sigma=0., jpeg_quality=None, rng=None):
    """The classical SR degradation ``JPEG((img ⊗ k)↓s + n)``, brought back to the input size by bicubic ``↑s``.

    Blur acts at the input resolution; noise and JPEG at the low resolution, where a camera adds them, so after the
    upsampling they look as they do in a bicubic-upsampled photo (what ``super-resolve-gt`` feeds an enhancer).
    With no blur, noise or JPEG this is the plain bicubic down-up of an x``scale`` SR pair (scale 1: a copy).

    Args:
        img (ndarray): HxWx3 float32 RGB in [0,1].
        scale (int): down/up factor, >= 1, at most min(H, W).
        blur_sigma (float): Gaussian blur σ in input pixels (0: none).
        noise_sigma (float): noise std on the 0-255 scale, added at the low resolution (0: none).
        jpeg_quality (int | None): JPEG quality at the low resolution, or None.
        rng (numpy.random.RandomState | None): the noise's generator (required when noise_sigma > 0).

    Returns:
        ndarray: HxWx3 float32 RGB in [0,1], the size of ``img``.
    """
    height, width = img.shape[:2]
    if int(scale) < 1 or min(height, width) < scale:
        raise ValueError(f'scale must be an integer in [1, {min(height, width)}] for a {height}x{width} image, '
                         f'got {scale}')
    low = gaussian_blur(img.astype(np.float32), blur_sigma)
    if scale > 1:
        low = resize(low, height // scale, width // scale)
    if noise_sigma > 0:
        low = gaussian_noise(low, noise_sigma, rng)
    if jpeg_quality is not None:
        low = jpeg(low, jpeg_quality)
    return (resize(low, height, width) if scale > 1 else low).astype(np.float32)
