"""Multi-block xz streams for the lzma coding (spec 5.1): write independent LZMA2 blocks, read them in parallel.

LZMA decodes at a roughly fixed cost per compressed bit, so one stream cannot be
decoded faster; an xz stream of several blocks, each with its compressed and
uncompressed size in its header (as `xz -T` writes), can be decoded block by block
on several cores. The encoder writes such streams (the .xz file format 1.0.4,
built here around the standard library's raw LZMA2 coder); the decoder's fast path
takes only streams of that exact shape, checks every field liblzma checks (CRCs,
sizes, index, backward size, padding, block checks) and returns None for anything
else or any failure, so that its caller falls back to liblzma's sequential
decoder, which then accepts or rejects the stream with its own errors.
"""

from __future__ import annotations

import lzma
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .parallel import available_cores

STREAM_MAGIC = b"\xfd7zXZ\x00"
FOOTER_MAGIC = b"YZ"
#: Stream flags: no reserved bits, check type 1 (CRC-32), the only check the fast path verifies.
CRC32_FLAGS = b"\x00\x01"
CHECK_SIZE = 4
FILTER_LZMA2 = 0x21
#: Block flags: one filter, compressed and uncompressed size present, no reserved bits.
SIZED_ONE_FILTER = 0xC0
#: The encoder's smallest block (uncompressed bytes; smaller inputs are one block) and its most blocks. Every
#: block restarts the dictionary: against one block, 1 MiB blocks cost 0.4-0.7 % in size on 4 MP photos at k = 64
#: and 1.7 % on a 16 MP one, 2 MiB blocks 0.9 %. So 4 MP images get 4 blocks, 16 MP 8, larger ones 8 larger blocks.
BLOCK_BYTES = 1 << 20
MAX_BLOCKS = 8
#: The largest LZMA2 dictionary the encoder writes and the fast path takes (larger ones go to liblzma, whose
#: 256 MiB memory limit decides); far below that limit, so both paths accept every stream the fast path takes.
MAX_DICTIONARY = 1 << 26
#: xz preset 9: the reference encoder's setting (spec 5.1).
PRESET = 9


def dictionary_size(props: int) -> int:
    """The LZMA2 dictionary size coded by a filter-properties byte (0-40; 40 means 4 GiB - 1)."""
    return 0xFFFFFFFF if props == 40 else (2 | (props & 1)) << (props // 2 + 11)


def dictionary_props(size: int) -> int:
    """The smallest LZMA2 properties byte whose dictionary holds `size` bytes (at least 4 KiB)."""
    return next(props for props in range(41) if dictionary_size(props) >= size)


def _vli(value: int) -> bytes:
    """The xz variable-length integer: 7 bits a byte, least significant first, high bit = more bytes follow."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _crc32(data) -> bytes:
    return _u32(zlib.crc32(data))


def _pad4(length: int) -> bytes:
    return bytes(-length % 4)


def split_points(size: int, block_bytes: int | None = None, max_blocks: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each block: equal blocks of at least `block_bytes` each (one when the input is smaller),
    at most `max_blocks` of them."""
    if size == 0:
        return []
    count = min(max_blocks or MAX_BLOCKS, max(1, size // (block_bytes or BLOCK_BYTES)))
    step = -(-size // count)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def _lzma2_block(data: memoryview) -> tuple[bytes, int]:
    """One xz block (header with both sizes, LZMA2 data, padding, CRC-32 of `data`) and its unpadded size."""
    props = dictionary_props(max(4096, min(len(data), MAX_DICTIONARY)))
    filters = [{"id": lzma.FILTER_LZMA2, "preset": PRESET, "dict_size": dictionary_size(props)}]
    compressed = lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)
    fields = bytes([SIZED_ONE_FILTER]) + _vli(len(compressed)) + _vli(len(data)) + bytes([FILTER_LZMA2, 1, props])
    header_size = -(-(1 + len(fields) + 4) // 4) * 4
    header = bytes([header_size // 4 - 1]) + fields + bytes(header_size - 5 - len(fields))
    header += _crc32(header)
    block = header + compressed + _pad4(len(compressed)) + _crc32(data)
    return block, len(header) + len(compressed) + CHECK_SIZE


def compress(data: bytes, block_bytes: int | None = None, max_blocks: int | None = None, workers: int | None = None) -> bytes:
    """An xz stream (CRC-32 check) of `data` in the blocks split_points gives, coded in parallel threads: no more at
    a time than keep their dictionaries within MAX_DICTIONARY together (preset 9 needs about 10 bytes of memory per
    dictionary byte), so memory stays what one 64 MiB stream took.

    One block is liblzma's own stream (no sizes in the block header), byte for byte what the encoder wrote before
    it wrote blocks, so small files and the conformance vectors do not change."""
    view = memoryview(data).cast("B")
    pieces = [view[start:end] for start, end in split_points(len(view), block_bytes, max_blocks)]
    if len(pieces) <= 1:  # liblzma's own one-block stream, as the encoder always wrote for small inputs
        filters = [{"id": lzma.FILTER_LZMA2, "preset": PRESET, "dict_size": max(4096, min(len(view), MAX_DICTIONARY))}]
        return lzma.compress(view, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
    largest = max(len(piece) for piece in pieces)
    workers = min(len(pieces), workers or available_cores(), max(1, MAX_DICTIONARY // largest))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:  # the lzma module releases the GIL while it compresses
            blocks = list(pool.map(_lzma2_block, pieces))
    else:
        blocks = [_lzma2_block(piece) for piece in pieces]
    index = b"\x00" + _vli(len(blocks))
    for (_, unpadded), piece in zip(blocks, pieces):
        index += _vli(unpadded) + _vli(len(piece))
    index += _pad4(len(index))
    index += _crc32(index)
    backward = _u32(len(index) // 4 - 1)
    footer = _crc32(backward + CRC32_FLAGS) + backward + CRC32_FLAGS + FOOTER_MAGIC
    return b"".join([STREAM_MAGIC, CRC32_FLAGS, _crc32(CRC32_FLAGS), *(block for block, _ in blocks), index, footer])


@dataclass(frozen=True)
class Block:
    """Where one block's LZMA2 data lies in the stream, what it declares, and where its output goes."""

    data_start: int
    compressed_size: int
    uncompressed_size: int
    dictionary: int
    check: int
    output_start: int


def _read_vli(buffer: bytes, position: int, end: int) -> tuple[int, int] | None:
    """Decode a variable-length integer at `position` (not past `end`): (value, next position), or None if it is
    cut off, longer than 9 bytes, or not minimally coded (liblzma rejects those)."""
    value = 0
    for shift in range(0, 63, 7):
        if position >= end:
            return None
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value, position) if byte or shift == 0 else None
    return None


def _u32_at(buffer: bytes, position: int) -> int:
    return struct.unpack_from("<I", buffer, position)[0]


def _parse_block_header(payload: bytes, position: int, limit: int) -> tuple[int, int, int, int] | None:
    """(header size, compressed size, uncompressed size, dictionary) of a block header that has exactly the shape
    the encoder writes and a correct CRC, or None."""
    if payload[position] == 0:  # the index indicator, not a block
        return None
    header_size = (payload[position] + 1) * 4
    end = position + header_size
    if end > limit or zlib.crc32(payload[position : end - 4]) != _u32_at(payload, end - 4):
        return None
    if payload[position + 1] != SIZED_ONE_FILTER:
        return None
    compressed = _read_vli(payload, position + 2, end - 4)
    uncompressed = compressed and _read_vli(payload, compressed[1], end - 4)
    if not uncompressed:
        return None
    filter_start = uncompressed[1]
    if filter_start + 3 > end - 4 or payload[filter_start : filter_start + 2] != bytes([FILTER_LZMA2, 1]):
        return None
    props = payload[filter_start + 2]
    if props > 40 or dictionary_size(props) > MAX_DICTIONARY or any(payload[filter_start + 3 : end - 4]):
        return None
    return header_size, compressed[0], uncompressed[0], dictionary_size(props)


def _parse_index(payload: bytes, start: int, end: int) -> list[tuple[int, int]] | None:
    """The (unpadded size, uncompressed size) records of the index in payload[start:end], if it is well formed
    (indicator, minimal integers, zero padding, CRC-32 and nothing after it), else None."""
    if end - start < 8 or payload[start] != 0:
        return None
    count = _read_vli(payload, start + 1, end - 4)
    if count is None or count[0] > (end - start) // 2:
        return None
    records, position = [], count[1]
    for _ in range(count[0]):
        unpadded = _read_vli(payload, position, end - 4)
        uncompressed = unpadded and _read_vli(payload, unpadded[1], end - 4)
        if not uncompressed:
            return None
        records.append((unpadded[0], uncompressed[0]))
        position = uncompressed[1]
    if position + -(position - start) % 4 != end - 4 or any(payload[position : end - 4]):
        return None
    if zlib.crc32(payload[start : end - 4]) != _u32_at(payload, end - 4):
        return None
    return records


def parse_blocks(payload: bytes, size: int) -> list[Block] | None:
    """The blocks of an xz stream that the fast path can decode into exactly `size` bytes, or None.

    Takes one stream with a CRC-32 check, no stream padding, at least two blocks, each
    with one LZMA2 filter (dictionary <= MAX_DICTIONARY) and both sizes in its header,
    whose index and footer match the blocks and whose uncompressed sizes add up to
    `size`; checks every CRC and padding of the stream header, block headers, index
    and footer. The blocks' own data and checks are verified while decoding.
    """
    end = len(payload)
    if end < 32 or payload[:6] != STREAM_MAGIC or payload[6:8] != CRC32_FLAGS:
        return None
    if _u32_at(payload, 8) != zlib.crc32(CRC32_FLAGS) or payload[-2:] != FOOTER_MAGIC or payload[-4:-2] != CRC32_FLAGS:
        return None
    if zlib.crc32(payload[-8:-2]) != _u32_at(payload, end - 12):
        return None
    index_start = end - 12 - (_u32_at(payload, end - 8) + 1) * 4
    if index_start < 12:
        return None
    records = _parse_index(payload, index_start, end - 12)
    if records is None or len(records) < 2 or sum(record[1] for record in records) != size:
        return None
    blocks, position, output = [], 12, 0
    for unpadded, uncompressed in records:
        header = _parse_block_header(payload, position, index_start) if position < index_start else None
        if header is None:
            return None
        header_size, compressed_size, uncompressed_size, dictionary = header
        if compressed_size == 0 or uncompressed_size != uncompressed or unpadded != header_size + compressed_size + CHECK_SIZE:
            return None
        data_start = position + header_size
        check_start = data_start + compressed_size + -compressed_size % 4  # blocks start 4-aligned: pad the data
        if check_start + CHECK_SIZE > index_start or any(payload[data_start + compressed_size : check_start]):
            return None
        blocks.append(Block(data_start, compressed_size, uncompressed, dictionary, _u32_at(payload, check_start), output))
        position, output = check_start + CHECK_SIZE, output + uncompressed
    return blocks if position == index_start else None


def _decode_block(payload: memoryview, block: Block, out: np.ndarray) -> bool:
    """Decode one block into its place in `out`; False unless it ends exactly where its header says, holding
    exactly the bytes it declares, and its CRC-32 matches."""
    # A dictionary larger than the block's output changes nothing (no match can reach before the block's start)
    # but would cost its memory: take the smaller one.
    dictionary = max(4096, min(block.dictionary, block.uncompressed_size))
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": dictionary}])
    data = payload[block.data_start : block.data_start + block.compressed_size]
    try:
        decoded = decoder.decompress(data, block.uncompressed_size)
        if not decoder.eof and decoder.decompress(b"", 1):
            return False
    except lzma.LZMAError:
        return False
    if not decoder.eof or decoder.unused_data or len(decoded) != block.uncompressed_size:
        return False
    if zlib.crc32(decoded) != block.check:
        return False
    out[block.output_start : block.output_start + len(decoded)] = np.frombuffer(decoded, dtype=np.uint8)
    return True


def decompress_blocks(payload: bytes, size: int, workers: int | None = None) -> np.ndarray | None:
    """The `size` bytes of a multi-block xz stream decoded block by block in parallel threads (uint8 array), or
    None when the stream is not of the shape parse_blocks takes or any block fails: the caller then decodes it
    with liblzma's sequential decoder, which accepts or rejects it."""
    blocks = parse_blocks(payload, size)
    if blocks is None:
        return None
    out = np.empty(size, dtype=np.uint8)
    view = memoryview(payload)
    failed = threading.Event()

    def decode(block: Block) -> bool:
        ok = not failed.is_set() and _decode_block(view, block, out)
        if not ok:
            failed.set()
        return ok

    workers = min(len(blocks), workers or available_cores())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:  # the lzma module releases the GIL while it decompresses
            results = list(pool.map(decode, blocks))
    else:
        results = [decode(block) for block in blocks]
    return out if all(results) else None
