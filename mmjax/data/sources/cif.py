"""Folder of CIF / POSCAR / CONTCAR / *.vasp files -> Material (ids from file stems)."""

from __future__ import annotations

import os
import pathlib

from mmjax.data.material import Material, RecordError
from mmjax.data.sources.compressed import base_suffix, compression_of, open_text
from mmjax.data.sources.result import ReadResult, SourceError, unique_ids
from mmjax.data.sources.structure_text import parse_structure

_FORMAT_OF_SUFFIX = {".cif": "cif", ".mcif": "cif", ".vasp": "poscar", ".poscar": "poscar"}
_POSCAR_NAMES = ("poscar", "contcar")


def structure_file_format(path: str | os.PathLike) -> str | None:
    """"cif" / "poscar" from the file name (extension, or a POSCAR*/CONTCAR* name), else None.

    Compression suffixes (.gz, .bz2, .xz) are looked through: "a.cif.gz" -> "cif".
    """
    fmt = _FORMAT_OF_SUFFIX.get(base_suffix(path))
    if fmt is None and pathlib.Path(path).name.lower().startswith(_POSCAR_NAMES):
        fmt = "poscar"
    return fmt


def file_id(path: str | os.PathLike) -> str:
    """Material id of a structure file: its name without compression and format suffixes."""
    name = pathlib.Path(path).name
    if compression_of(name):
        name = os.path.splitext(name)[0]
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in _FORMAT_OF_SUFFIX else name


def read_structure_file(path: str | os.PathLike, fmt: str | None = None) -> Material:
    """One structure file -> Material; raises ``RecordError`` naming the file when it is bad.

    fmt: "cif", "poscar", or None (from the name, else detected from the contents).
    """
    path = pathlib.Path(path)
    try:
        with open_text(path) as fh:
            text = fh.read()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise RecordError(path.name, f"cannot be read ({exc})") from exc
    if not text.strip():
        raise RecordError(path.name, "file is empty")
    try:
        structure = parse_structure(text, fmt or structure_file_format(path))
    except ValueError as exc:
        raise RecordError(path.name, str(exc)) from exc
    return Material(id=file_id(path), structure=structure, meta={"source_file": str(path)})


def read_structure_folder(
    folder: str | os.PathLike,
    *,
    recursive: bool = False,
    all_files: bool = False,
    fmt: str | None = None,
    limit: int | None = None,
    duplicate_ids: str = "suffix",
) -> ReadResult:
    """Read every structure file in ``folder`` (sorted by path), or a single file.

    Files are chosen by name (``*.cif``, ``*.mcif``, ``*.vasp``, ``*.poscar``, ``POSCAR*``,
    ``CONTCAR*``, optionally compressed); with ``all_files`` every regular file that does not
    start with "." is tried and its format detected from the contents.
    recursive: also descend into sub-folders. fmt: force "cif" or "poscar" for every file.
    limit: read at most this many files. duplicate_ids: see ``result.unique_ids``.
    Returns ``ReadResult``; a file that does not parse becomes a ``RecordError`` naming it.
    """
    folder = pathlib.Path(folder)
    if folder.is_file():
        paths = [folder]
    elif folder.is_dir():
        candidates = folder.rglob("*") if recursive else folder.iterdir()
        paths = sorted(
            p
            for p in candidates
            if p.is_file()
            and not p.name.startswith(".")
            and (all_files or structure_file_format(p) is not None)
        )
        if not paths:
            raise SourceError(folder, "holds no CIF/POSCAR files (*.cif, *.vasp, POSCAR*, CONTCAR*)")
    else:
        raise SourceError(folder, "no such file or folder")
    if limit is not None:
        paths = paths[:limit]
    materials, errors = [], []
    for path in paths:
        try:
            materials.append(read_structure_file(path, fmt))
        except RecordError as err:
            errors.append(err)
    return ReadResult(unique_ids(materials, duplicate_ids, str(folder)), errors)
