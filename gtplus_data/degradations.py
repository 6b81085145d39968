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


# The quickstart's "real" camera LR (``camera_lr``): a chain built to be unlike every synthesizer gtplus ships, so
# that a fine-tuned SR model is judged on a degradation it never saw. Blur is a defocus disk (not Gaussian, not
# sinc), acting in linear light; the sensor integrates (area) rather than resampling (bicubic); noise is
# signal-dependent (shot + read) on a Bayer mosaic, then demosaiced (so it is colour-correlated and pixel-shifted);
# a white-balance error tints it; gamma and JPEG 4:2:0 come last. Keyword names are ``camera_lr``'s arguments.
CAMERA_LR = dict(defocus_radius=1.5, shot_noise=0.003, read_noise=0.002, wb_gains=(1.06, 1.0, 0.94), jpeg_quality=80)


def srgb_to_linear(img):
    """sRGB-encoded values in [0,1] -> linear light in [0,1] (IEC 61966-2-1)."""
    img = np.clip(img, 0, 1)
    return np.where(img <= 0.04045, img / 12.92, ((img + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(img):
    """Linear light in [0,1] -> sRGB-encoded values in [0,1] (IEC 61966-2-1)."""
    img = np.clip(img, 0, 1)
    return np.where(img <= 0.0031308, img * 12.92, 1.055 * img ** (1 / 2.4) - 0.055).astype(np.float32)


def defocus_blur(img, radius):
    """Blur with a uniform disk (pillbox) of ``radius`` pixels, the PSF of an out-of-focus lens; 0 returns a copy.

    The disk is anti-aliased (each kernel tap weighted by the share of its pixel inside the circle, 8x8
    supersampled) so that fractional radii blur by fractional amounts.
    """
    if radius <= 0:
        return img.copy()
    half = int(np.ceil(radius))
    offsets = (np.arange(8) + 0.5) / 8 - 0.5
    grid = np.arange(-half, half + 1)
    fine = (grid[:, None] + offsets[None, :]).reshape(-1)
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= radius ** 2
    kernel = inside.reshape(len(grid), 8, len(grid), 8).mean(axis=(1, 3)).astype(np.float32)
    return cv2.filter2D(img, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def camera_lr(img, scale, seed, **params):
    """A camera-like low-resolution capture of a pristine image.

    In linear light: defocus disk of ``defocus_radius`` HR pixels, sensor integration over ``scale`` x ``scale``
    pixel areas, white-balance gains, an RGGB Bayer mosaic with Poisson-Gaussian noise per photosite (variance
    ``shot_noise`` * x + ``read_noise``², x the linear value), bilinear demosaicing (OpenCV); then the sRGB curve and
    JPEG at ``jpeg_quality`` (OpenCV's 4:2:0 chroma subsampling).

    Args:
        img (ndarray): HxWx3 float32 RGB in [0,1], sRGB-encoded; H and W multiples of ``scale``.
        scale (int): downscaling factor, >= 1.
        seed (int): seed of the noise (one per image, e.g. :func:`key_seed`).
        **params: any of :data:`CAMERA_LR`'s keys, replacing its value:
        defocus_radius (float): disk radius in HR pixels (0: none).
        shot_noise (float): signal-dependent noise variance per unit of linear signal (0: none).
        read_noise (float): signal-independent noise std in linear units (0: none).
        wb_gains (tuple[float]): per-channel gains (R, G, B) of a white-balance error.
        jpeg_quality (int | None): JPEG quality, or None for no compression.

    Returns:
        ndarray: (H/scale)x(W/scale)x3 float32 RGB in [0,1].
    """
    unknown = sorted(set(params) - set(CAMERA_LR))
    if unknown:
        raise ValueError(f'camera_lr: unknown parameter(s) {", ".join(unknown)}; known: {", ".join(CAMERA_LR)}')
    params = {**CAMERA_LR, **params}
    defocus_radius, shot_noise, read_noise = params['defocus_radius'], params['shot_noise'], params['read_noise']
    wb_gains, jpeg_quality = params['wb_gains'], params['jpeg_quality']
    height, width = img.shape[:2]
    if int(scale) != scale or scale < 1 or height % scale or width % scale:
        raise ValueError(f'camera_lr: scale must be an integer >= 1 dividing the image size {height}x{width}, got '
                         f'{scale}')
    low_h, low_w = height // scale, width // scale
    if low_h % 2 or low_w % 2:
        raise ValueError(f'camera_lr: the LR size {low_h}x{low_w} must be even (an RGGB mosaic of 2x2 cells)')
    linear = defocus_blur(srgb_to_linear(img.astype(np.float32)), defocus_radius)
    linear = cv2.resize(linear, (low_w, low_h), interpolation=cv2.INTER_AREA) if scale > 1 else linear
    linear = np.clip(linear * np.asarray(wb_gains, np.float32), 0, 1)
    # The mosaic keeps one channel per photosite: R at (even, even), G at (even, odd) and (odd, even), B at (odd, odd).
    mosaic = np.empty((low_h, low_w), np.float32)
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2]
    rng = np.random.RandomState(seed)
    sigma = np.sqrt(shot_noise * mosaic + read_noise ** 2)
    mosaic = np.clip(mosaic + sigma * rng.standard_normal(mosaic.shape).astype(np.float32), 0, 1)
    # OpenCV names Bayer patterns by the second row's first two pixels: RGGB is its BayerBG; 16 bits keep the noise.
    rgb = cv2.cvtColor((mosaic * 65535).round().astype(np.uint16), cv2.COLOR_BayerBG2RGB).astype(np.float32) / 65535
    out = linear_to_srgb(rgb)
    return (jpeg(out, jpeg_quality) if jpeg_quality is not None else out).astype(np.float32)
