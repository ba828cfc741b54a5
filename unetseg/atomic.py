"""Write a file whole or not at all, and never through a symbolic link.

Every output unetseg writes (checkpoints, masks, probability maps, overlays, volumes) goes to
a temporary file in the destination's folder and is then renamed over the destination.
Two things follow from the rename:

- a kill or a full disk mid-write leaves the previous file (or none), never a truncated one;
- a symbolic link at the destination is *replaced* by the new file: ``rename`` acts on the
  directory entry, not on what a link points to. Opening the destination for writing would
  follow the link and write wherever it points, dangling or not: outside ``--out``.

The temporary name keeps at most the first 32 characters of the destination's name (hidden,
``.<name>.<random>.tmp<extension>``): a 240-character file name fits the file system's limit of
255, and would not with the whole name repeated in the temporary one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TMP_NAME_CHARS = 32  # of the destination's name kept in the temporary one


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def full_suffix(path: Path) -> str:
    """The extension writers choose a format by: ``.nii.gz`` counts as one."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def replace_by_rename(path: Path, write: Callable[[Path], None], keep_suffix: bool = True, sync: bool = False) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    ``keep_suffix``: the temporary file ends in ``path``'s extension, for writers that choose
    the format by it (OpenCV, tifffile, nibabel); else it ends in ``.tmp``. ``sync``: flush it
    to the disk before the rename (checkpoints), so a power cut cannot leave an empty file.
    The temporary file is removed if anything fails, and the destination is left as it was.
    """
    path = Path(path)
    suffix = ".tmp" + (full_suffix(path) if keep_suffix else "")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:TMP_NAME_CHARS]}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it owner-only; give it a plain file's mode
        os.close(fd)
        write(Path(tmp))
        if sync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
