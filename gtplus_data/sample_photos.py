"""The embedded default data: the real colour photographs that scikit-image installs (no download needed).

scikit-image 0.26 ships 8 colour photographs in its wheel. Its other colour images are synthetic (colorwheel,
logo) or duplicates (cat is chelsea), and lily, skin, kidney and eagle need pooch and a download.
stereo_motorcycle is a stereo pair: its left view is used.
"""
import os
import os.path as osp

import numpy as np

SAMPLE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'rocket',
                 'stereo_motorcycle')


def sample_photo_names():
    """The photo names, sorted; also the PNG file stems that :func:`write_sample_photos` writes."""
    return list(SAMPLE_PHOTOS)


def load_sample_photo(name):
    """Load one photo.

    Args:
        name (str): one of :func:`sample_photo_names`.

    Returns:
        np.ndarray: (H, W, 3) uint8 RGB.
    """
    import skimage.data
    if name not in SAMPLE_PHOTOS:
        raise KeyError(f'unknown sample photo {name!r}; choose from {", ".join(SAMPLE_PHOTOS)}')
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    return np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)


def write_sample_photos(out_dir):
    """Write every sample photo as ``out_dir/<name>.png`` (idempotent: identical files are not rewritten).

    Args:
        out_dir (str): folder, created if needed.

    Returns:
        list[str]: the PNG paths, sorted.
    """
    from tqdm import tqdm

    from gtplus_data.atomic_file import atomic_write
    from gtplus_data.image_util import encode_png
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in tqdm(SAMPLE_PHOTOS, desc='sample photos', unit='img', disable=None):
        path = osp.join(out_dir, f'{name}.png')
        data = encode_png(load_sample_photo(name), compress_level=3)
        if not osp.isfile(path) or open(path, 'rb').read() != data:
            atomic_write(path, data)  # a killed run never leaves half a PNG under the final name
        paths.append(path)
    return paths
