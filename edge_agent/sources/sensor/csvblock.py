"""Many CSV lines at once: a replayed file (or a fast serial port) delivers
thousands of lines per read.

Parsing them one by one in Python costs ~6 us a line, ~200 us per 64x3 window;
these functions parse a whole block with a few dozen numpy operations instead.
Whatever they are not sure of goes through `parse_line` line by line, so the
samples and the error messages are exactly those of `parse_line`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edge_agent.errors import InputError
from edge_agent.sources.sensor.parsing import parse_line
from edge_agent.sources.sensor.window import Vector

BOM = b"\xef\xbb\xbf"  # the UTF-8 byte order mark
LineError = tuple[int, str]  # (index of the line in its block, why it was rejected)


_NEWLINE, _COMMA, _MINUS, _POINT, _PLUS = b"\n,-.+"
# Every byte a plain CSV line of numbers can hold. A line with any other byte
# (JSON, `nan`, `1_000`, non-ASCII, control characters) is parsed on its own.
_CSV_BYTES = b"0123456789+-.eE,\n\t\r "
_FOREIGN = np.ones(256, dtype=bool)
_FOREIGN[list(_CSV_BYTES)] = False
_SPACES = (b" ", b"\t", b"\r")  # whitespace `float` strips off a cell, as `parse_line` does
_WORD = 8  # bytes per uint64: cells this short are parsed in registers, see `_short_numbers`
# Cells per `_short_numbers` call. Its dozens of temporaries then stay small (32 KiB),
# in cache, and below glibc's trim threshold: for a whole 64 KiB read they add up to
# ~1 MB that malloc hands back to the kernel after every read and page-faults back
# in on the next, which costs more than the parsing (measured on a 2-core VM).
_PART = 4096


def parse_csv_block(
    block: bytes, channels: int, fields: list[str] | None = None
) -> tuple[npt.NDArray[np.float32], list[LineError]]:
    """Samples float32 [n, channels] from newline-separated lines, and the bad lines.

    The result is what `parse_line` makes of each line in turn: the samples of the
    good lines in order, and (line index, InputError message) per bad line. Blank
    lines are skipped, as a lines source skips them; a last line without a newline
    counts; a UTF-8 byte order mark that starts the block is not part of any line.
    Plain CSV lines are parsed together; any line the bulk parse is not sure of
    (JSON, other bytes, a wrong number of cells, a value `float` rejects or float32
    cannot hold) goes through `parse_line` on its own. With `fields` every line
    does: JSON is expected.
    """
    block = block.removeprefix(BOM)  # lines stay where they were: it is not a line
    if not block:
        return np.empty((0, channels), dtype=np.float32), []
    if not block.endswith(b"\n"):
        block += b"\n"
    padded = np.frombuffer(block + bytes(_WORD), dtype=np.uint8)  # a word can start anywhere
    newline = padded[: len(block)] == _NEWLINE
    ends = np.flatnonzero(newline)
    if fields is None:
        samples, parsed = _parse_plain(block, padded, newline, ends, channels)
        if parsed.all():
            return samples, []
    else:
        samples = np.zeros((len(ends), channels), dtype=np.float32)
        parsed = np.zeros(len(ends), dtype=bool)
    keep = parsed.copy()
    errors: list[LineError] = []
    starts = np.concatenate(([0], ends[:-1] + 1))
    for index in np.flatnonzero(~parsed).tolist():
        try:
            sample = _parse_raw(block[starts[index] : ends[index]], channels, fields)
        except InputError as exc:
            errors.append((index, str(exc)))
            continue
        if sample is not None:
            samples[index] = sample
            keep[index] = True
    return samples[keep], errors


def _parse_raw(raw: bytes, channels: int, fields: list[str] | None) -> Vector | None:
    """One line as a lines source reads it: None if blank, else `parse_line`'s sample."""
    if not raw.strip():
        return None
    return parse_line(raw.decode("utf-8", "replace"), channels, fields)


def _parse_plain(
    block: bytes,
    padded: npt.NDArray[np.uint8],
    newline: npt.NDArray[np.bool_],
    ends: npt.NDArray[np.intp],
    channels: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Samples [lines, channels] whose rows are right where the second array is True:
    for the lines that parse in bulk.

    A line qualifies when it holds only `_CSV_BYTES`, has one cell per channel, and
    `float` takes every cell to a value float32 can hold. `parse_line` would give
    such a line the same float32 values: it strips the same ASCII whitespace off
    the same cells and calls the same `float` (or one that rounds the same way).
    """
    data = padded[: len(block)]
    plain = np.ones(len(ends), dtype=bool)
    if block.translate(None, _CSV_BYTES):  # some other byte somewhere: find its lines
        plain[np.searchsorted(ends, np.flatnonzero(_FOREIGN[data]))] = False
    delimiters = np.flatnonzero(newline | (data == _COMMA))
    counts = _cells_per_line(data, delimiters, len(ends), channels)
    cells = None  # usually every cell
    if counts is not None or not plain.all():
        if counts is not None:
            plain &= counts == channels
        cells = np.flatnonzero(np.repeat(plain, channels if counts is None else counts))
    values = _cell_values(block, padded, delimiters, cells)
    with np.errstate(over="ignore", invalid="ignore"):  # out of float32 range becomes inf
        rows = values.astype(np.float32).reshape(-1, channels)
    if cells is None:
        samples = rows
    else:
        samples = np.zeros((len(ends), channels), dtype=np.float32)
        samples[plain] = rows
    if not np.isfinite(samples).all():
        # NaN (a cell `float` rejected) or inf: `parse_line` says which value, and why
        plain &= np.isfinite(samples).all(axis=1)
    return samples, plain


def _cells_per_line(
    data: npt.NDArray[np.uint8], delimiters: npt.NDArray[np.intp], lines: int, channels: int
) -> npt.NDArray[np.intp] | None:
    """The number of cells in each line; None if it is `channels` in every line.

    That is the usual case, and cheaper to recognise than to count: every
    channels-th delimiter is then a newline.
    """
    ends = delimiters[channels - 1 :: channels]
    if len(delimiters) == lines * channels and (data[ends] == _NEWLINE).all():
        return None
    newlines = np.flatnonzero(data[delimiters] == _NEWLINE)
    return np.diff(newlines, prepend=-1)


def _cell_values(
    block: bytes,
    padded: npt.NDArray[np.uint8],
    delimiters: npt.NDArray[np.intp],
    cells: npt.NDArray[np.intp] | None,
) -> npt.NDArray[np.float64]:
    """float64 of the numbered cells (all if None; cell i ends at delimiters[i]), NaN
    for a cell `float` rejects. Short plain decimals in bulk, the rest (exponents,
    long cells, garbage) by `float` itself."""
    starts = np.concatenate(([0], delimiters[:-1] + 1))
    ends = delimiters
    if cells is not None:
        starts, ends = starts[cells], ends[cells]
    lengths = ends - starts
    if np.count_nonzero(lengths <= _WORD) * 2 >= len(lengths):
        spaced = any(space in block for space in _SPACES)
        values, done = np.empty(len(lengths)), np.empty(len(lengths), dtype=bool)
        for part in range(0, len(lengths), _PART):
            cut = slice(part, part + _PART)
            values[cut], done[cut] = _short_numbers(
                padded, starts[cut], lengths[cut], spaced=spaced
            )
        rest = np.flatnonzero(~done)
    else:  # mostly long cells: not worth trying
        values, rest = np.empty(len(lengths)), np.arange(len(lengths))
    if len(rest):
        values[rest] = _floats(
            _cell_bytes(block, delimiters, rest if cells is None else cells[rest])
        )
    return values


def _cell_bytes(
    block: bytes, delimiters: npt.NDArray[np.intp], cells: npt.NDArray[np.intp]
) -> list[bytes]:
    """The numbered cells' bytes: a slice each for a few, one split of the block for many."""
    if len(cells) * 4 < len(delimiters):
        ends = delimiters[cells].tolist()
        starts = np.where(cells > 0, delimiters[cells - 1] + 1, 0).tolist()
        return [block[start:end] for start, end in zip(starts, ends, strict=True)]
    every = block[:-1].replace(b"\n", b",").split(b",")
    return [every[cell] for cell in cells.tolist()]


def _floats(cells: list[bytes]) -> npt.NDArray[np.float64]:
    """`float` of every cell at once; NaN for a cell it rejects (only plain CSV bytes
    reach here, so a true NaN cannot: NaN always sends its line to `parse_line`)."""
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        return np.array([_float_or_nan(cell) for cell in cells], dtype=np.float64)


def _float_or_nan(cell: bytes) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


# --- short decimals, eight bytes at a time --------------------------------------------
#
# Sensor CSV is mostly short decimals (`-0.1876`, `1023`, `21.5`). A cell of up to
# eight bytes fits in a uint64, and a few integer operations on an array of those
# words parse every cell at once, where `float` costs ~80 ns a cell. Flags are
# arrays of bools viewed as words, 0x01 per byte; byte 0 (the lowest, on the
# little-endian `<u8` view) holds a cell's first character.
#
# The value is exact: the digits (the point removed) form an integer below 10**8,
# and dividing two doubles that hold integers exactly (the digits, a power of ten
# up to 10**8) rounds correctly, so it gives what `float` gives (Clinger's fast
# path). Cells that are not `[+-]digits[.digits]` in at most eight bytes (after
# whitespace is stripped), such as `1e3` or `0.123456789`, are left to `float`.

_U64 = np.dtype("<u8")
_LOW = np.array([(1 << (8 * n)) - 1 for n in range(_WORD + 1)], dtype=_U64)  # low n bytes
_POWERS = 10.0 ** np.arange(_WORD + 1)
_DIVISORS = np.concatenate((_POWERS, -_POWERS))  # [n + 9 * negative]
_ONE, _BYTE = np.uint64(1), np.uint64(8)


def _popcount(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """Set bits per uint64, as `np.bitwise_count` (numpy >= 2) counts them: the
    tflite-runtime install pins numpy < 2, which lacks it."""
    m1, m2, m4 = (
        np.uint64(0x5555555555555555),
        np.uint64(0x3333333333333333),
        np.uint64(0x0F0F0F0F0F0F0F0F),
    )
    x = words - ((words >> _ONE) & m1)
    x = (x & m2) + ((x >> np.uint64(2)) & m2)
    x = (x + (x >> np.uint64(4))) & m4
    counts: npt.NDArray[np.uint8] = ((x * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(
        np.uint8
    )
    return counts


_bitwise_count = getattr(np, "bitwise_count", _popcount)


def _short_numbers(
    padded: npt.NDArray[np.uint8],
    starts: npt.NDArray[np.intp],
    lengths: npt.NDArray[np.intp],
    *,
    spaced: bool,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Values of the cells padded[start : start + length], and which are right; with
    `spaced`, cells may hold whitespace around the number."""
    words = np.ndarray((len(padded) - _WORD + 1,), dtype=_U64, buffer=padded, strides=(1,))
    done = (lengths >= 1) & (lengths <= _WORD)
    size = np.minimum(lengths, _WORD)
    cell = words.take(starts) & _LOW[size]  # the bytes after a cell are zero
    if spaced:
        cell, size = _strip(cell)
    chars = cell.view(np.uint8)
    digits = chars - np.uint8(ord("0"))
    is_digit = digits < 10
    digits *= is_digit  # every other byte counts as a 0 digit
    minus = chars == _MINUS
    digit, point, used = is_digit.view(_U64), (chars == _POINT).view(_U64), (chars != 0).view(_U64)
    sign = (minus | (chars == _PLUS)).view(_U64)
    done &= (digit | point | sign) == used  # nothing but digits, a point and a sign
    done &= digit != 0  # at least one digit
    done &= (sign >> _BYTE) == 0  # a sign only first
    done &= (point & (point - _ONE)) == 0  # one point at most
    # the point's index, found as the number of flag bits below it; `size` if none
    at = np.minimum(_bitwise_count(point - _ONE) >> 3, size)
    # close the gap: the bytes from the point on take the next byte's digit
    below = _LOW[at]
    values = digits.view(_U64)
    number = _digits_value((values & below) | ((values >> _BYTE) & ~below))
    # the eight digits are the number times 10**(8 - at), sign included
    return number.astype(np.float64) / _DIVISORS[(_WORD - at) + 9 * minus[::_WORD]], done


def _strip(cell: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.intp]]:
    """The cells moved down past their leading whitespace, cut to their count of other
    bytes. Whitespace inside a number (`1 2`, which `float` rejects) stays within the
    cut, where `_short_numbers` rejects it like any byte that is not part of a number."""
    chars = cell.view(np.uint8)
    token = ((chars != 0) & (chars != 32) & (chars != 9) & (chars != 13)).view(_U64)
    first = _bitwise_count((token & (~token + _ONE)) - _ONE) >> 3  # 8 if blank
    shift = np.minimum(first, _WORD - 1).astype(np.uint64) * _BYTE
    size = _bitwise_count(token)
    return (cell >> shift) & _LOW[size], size.astype(np.intp)


def _digits_value(digits: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Eight digit values (0-9, the first in byte 0) as the integer they spell:
    pairs, then fours, then all eight combined in place (SWAR)."""
    pairs = (digits * np.uint64(10) + (digits >> _BYTE)) & np.uint64(0x00FF00FF00FF00FF)
    fours = (pairs * np.uint64(100) + (pairs >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (fours * np.uint64(10000) + (fours >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
