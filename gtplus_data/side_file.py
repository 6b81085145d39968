"""Side files: per-key data that travels with an LMDB (or image folder), written atomically
(:mod:`gtplus_data.atomic_file`).

Layout: ``OUT.lmdb/<name>.json`` = ``{"format": "gtplus-side-file-1", "description": str,
"records": {key: {field: value, ...}, ...}}``, keys sorted, written atomically. Writers may add top-level fields
(``gtplus score`` adds ``metrics`` and ``ensemble``); :func:`read_side_file` returns the records.
Known side files: ``quality_scores.json`` (:mod:`gtplus_models.tools.scoring`).
"""
import json
import os.path as osp
import re

from gtplus_data.atomic_file import atomic_write

SIDE_FILE_FORMAT = 'gtplus-side-file-1'
RESERVED_STEMS = ('meta_info', )  # BasicSR's own meta_info.txt lives beside the side files


def write_json(path, payload):
    """Write ``payload`` as indented JSON with sorted keys, atomically (OSError naming ``path`` if it cannot be
    written; see :func:`gtplus_data.atomic_file.atomic_write`)."""
    atomic_write(path, json.dumps(payload, indent=1, sort_keys=True) + '\n')


def side_file_path(lmdb_path, name):
    """``lmdb_path/<name>.json``; ``name`` must be a plain file stem."""
    if not re.fullmatch(r'[A-Za-z0-9_.-]+', name) or name in RESERVED_STEMS:
        raise ValueError(f'side file name {name!r} must be a plain file stem other than "meta_info"')
    return osp.join(lmdb_path, f'{name}.json')


def write_side_file(lmdb_path, name, records, description):
    """Write per-key side data next to the images (atomic; replaces an older file of that name).

    Args:
        lmdb_path (str): the LMDB (or image) folder.
        name (str): file stem, e.g. 'quality_scores'.
        records (dict[str, dict]): key -> {field: JSON value}.
        description (str): what the fields mean, kept in the file for the next reader.

    Returns:
        str: the side file's path.
    """
    path = side_file_path(lmdb_path, name)
    payload = {'format': SIDE_FILE_FORMAT, 'description': description,
               'records': {key: records[key] for key in sorted(records)}}
    write_json(path, payload)
    return path


def read_side_file(lmdb_path, name, with_description=False):
    """Read a side file written by :func:`write_side_file`.

    Returns:
        dict[str, dict]: key -> fields; or (records, description) with ``with_description=True``.

    Raises:
        FileNotFoundError: naming the file, if it does not exist.
    """
    payload = read_side_payload(side_file_path(lmdb_path, name))
    return (payload['records'], payload['description']) if with_description else payload['records']


def read_side_payload(path):
    """The whole JSON of the side file at ``path`` (``format``, ``description``, ``records`` and whatever a tool
    added, e.g. ``gtplus score``'s ``metrics``), its format checked.

    Raises:
        FileNotFoundError: naming the file, if it does not exist.
        ValueError: naming the file, if it is not a gtplus side file.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'side file not found: {path}')
    with open(path) as f:
        payload = json.load(f)
    if payload.get('format') != SIDE_FILE_FORMAT:
        raise ValueError(f'{path} is not a gtplus side file (format {payload.get("format")!r})')
    return payload
