"""Figures that tools write beside their outputs: labelled strips, grids and mask maps (uint8 RGB arrays)."""
import cv2
import numpy as np

from gtplus_data.image_util import to_uint8, write_png

LABEL_HEIGHT = 22


def fit_height(img, height, interpolation=cv2.INTER_AREA):
    """Resize an HxWx3 uint8 image to ``height`` keeping its aspect ratio (``cv2.INTER_NEAREST`` shows the pixels of
    a small LQ image as they are)."""
    if img.shape[0] == height:
        return img
    width = max(1, round(img.shape[1] * height / img.shape[0]))
    return cv2.resize(img, (width, height), interpolation=interpolation)


def label_panel(img, text):
    """Put a white label bar with ``text`` above an HxWx3 uint8 RGB image."""
    bar = np.full((LABEL_HEIGHT, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, LABEL_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def labelled_strip(panels, height=None, gap=4, interpolation=cv2.INTER_AREA):
    """Side-by-side labelled panels.

    Args:
        panels (list[tuple[str, ndarray]]): (label, HxWx3 uint8 RGB) pairs.
        height (int | None): common panel height (default: the first panel's).
        gap (int): white pixels between panels.
        interpolation (int): how panels are resized to ``height`` (see :func:`fit_height`).

    Returns:
        ndarray: the strip, uint8 RGB.
    """
    height = height or panels[0][1].shape[0]
    labelled = [label_panel(fit_height(img, height, interpolation), text) for text, img in panels]
    spacer = np.full((labelled[0].shape[0], gap, 3), 255, np.uint8)
    parts = []
    for panel in labelled:
        parts += [panel, spacer]
    return np.concatenate(parts[:-1], axis=1)


def stack_rows(rows, gap=6):
    """Stack strips vertically, padding each on the right with white to the widest."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, axis=0)[:-gap]


def mask_to_colour(mask):
    """A [H,W] mask in [0,1] (centred spectrum layout) -> HxWx3 uint8 RGB with the viridis map."""
    grey = (np.clip(mask, 0, 1) * 255).round().astype(np.uint8)
    return cv2.applyColorMap(grey, cv2.COLORMAP_VIRIDIS)[..., ::-1].copy()


def zoom_centre(img, fraction=0.25):
    """The centre of an image, enlarged so fine detail is visible at the size of the whole.

    Args:
        img (ndarray): HxWx3 uint8 RGB.
        fraction (float): side of the crop relative to each image side, in (0, 1].

    Returns:
        ndarray: HxWx3 uint8 RGB (nearest-neighbour enlargement, so pixels stay pixels).
    """
    height, width = img.shape[:2]
    crop_h, crop_w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = img[top:top + crop_h, left:left + crop_w]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_NEAREST)


def preview_rows(key, panels, height=192, zoom=0.25):
    """Two strips for one image: the whole panels, then their centres enlarged (``zoom`` of each side).

    Args:
        key (str): the image's key, shown on the first panel.
        panels (list[tuple[str, ndarray]]): (label, HxWx3 uint8 RGB) pairs of the same image size.
        height (int): panel height in the figure.

    Returns:
        list[ndarray]: [whole strip, zoomed strip], uint8 RGB.
    """
    labelled = [(f'{label} [{key}]' if i == 0 else label, img) for i, (label, img) in enumerate(panels)]
    zoomed = [(f'{label} centre x{1 / zoom:g}', zoom_centre(img, zoom)) for label, img in panels]
    return [labelled_strip(labelled, height), labelled_strip(zoomed, height)]


def write_sources_preview(sources, path, num_keys=4):
    """A PNG comparing images that share keys: per key, the whole images and their centres enlarged.

    Args:
        sources (list[tuple[str, ImageSource]]): (label, source) pairs with the same keys and image sizes; the
            first source's keys are used.
        path (str): the PNG to write (atomically).
        num_keys (int): how many images (the first keys in order).

    Returns:
        str: ``path``.
    """
    rows = []
    for key in sources[0][1].keys[:num_keys]:
        rows += preview_rows(key, [(label, to_uint8(source.read(key))) for label, source in sources])
    write_png(path, stack_rows(rows))
    return path
