"""One check shared by every reader of image files (:func:`mtvif_zoo.fusion.load_image`, the metrics
reader :mod:`mtvif_zoo.metrics.io`, the training pre-flight :func:`mtvif_zoo.data.validate_records`):
a PNG whose image data ends before its last row is an error, not black rows.

Standard library only, so the data, metrics and fusion modules can all import it (the models
import nothing from here: ``tests/test_import_graph.py``).
"""
import os
import struct
import zlib
from typing import Union

__all__ = ['check_png_data']

#: PNG colour type -> samples per pixel (PNG spec 11.2.2)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Adam7 passes: (x0, y0, dx, dy) (PNG spec 8.2)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
#: inflate in pieces of at most this many bytes (only the count is kept: memory stays bounded)
_CHUNK = 1 << 22


def check_png_data(path: Union[str, os.PathLike], what: str = 'PNG file') -> None:
    """Raise ``ValueError`` naming ``path`` (``what``: how the message calls it, e.g. ``'visible image'``)
    when a PNG's image data ends before its last row.

    PIL decodes a PNG whose zlib stream is complete and CRC-valid but holds fewer rows than the
    header declares without an error, the missing rows black (a label: class 0): a silent wrong
    image. This counts the inflated bytes against what IHDR implies (one filter byte + the packed
    samples per row, per Adam7 pass when interlaced). Other formats (and files that are not PNG)
    are left to PIL; call it after PIL has decoded the file, so PIL's own errors come first.
    """
    with open(path, 'rb') as f:
        if f.read(8) != b'\x89PNG\r\n\x1a\n':
            return
        idat, ihdr = [], None
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            n, kind = struct.unpack('>I4s', head)
            if kind == b'IHDR':
                ihdr = f.read(n)
            elif kind == b'IDAT':
                idat.append(f.read(n))
            elif kind == b'IEND':
                break
            else:
                f.seek(n, os.SEEK_CUR)
            f.seek(4, os.SEEK_CUR)  # CRC: PIL checked it
    if ihdr is None or len(ihdr) < 13:
        return
    w, h, depth, colour, _, _, interlace = struct.unpack('>IIBBBBB', ihdr[:13])
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        pw, ph = -(-(w - x0) // dx) if w > x0 else 0, -(-(h - y0) // dy) if h > y0 else 0
        if pw and ph:
            expected += ph * (1 + (pw * bits + 7) // 8)
    d, got, buf = zlib.decompressobj(), 0, b''.join(idat)
    while got < expected:
        out = d.decompress(buf, min(_CHUNK, expected - got))
        if not out:
            break
        got += len(out)
        buf = d.unconsumed_tail
    if got < expected:
        raise ValueError(f'{what} {str(path)!r}: PNG image data ends early: {got} of the {expected} bytes its {w}x{h} '
                         'header declares (rows missing; they would be read as black)')
