"""fastgate/phases/compression.py: encoding choice, response compression (decoded by real
clients' decoders), streaming flushes, compressed request bodies and the bomb cap."""
import gzip
import io
import os
import zlib

import brotli
import httpx
import pytest
import zstandard
from httpx import _decoders as httpx_decoders

from fastgate.phases.compression import (
    BodyTooLarge, Compressor, ENCODINGS, UnsupportedEncoding, choose_encoding, compress_body,
    decode_request_body, should_compress)

BODY = b'{"id": 1, "type": "dog", "price": 249.99, "tags": ["a", "b", "c"]}\n' * 200


# ----------------------------------------------------------- choose_encoding --

@pytest.mark.parametrize("header,available,want", [
    (b"", ("gzip",), None),                                   # no header: API Gateway does not compress
    (b"gzip", ("gzip",), "gzip"),
    (b"GZip", ("gzip",), "gzip"),                             # case-insensitive
    (b"x-gzip", ("gzip",), "gzip"),                           # RFC 9110 alias
    (b"deflate", ("gzip",), None),                            # not offered
    (b"gzip, deflate, br", ("br", "zstd", "gzip"), "br"),     # equal q: the server's order
    (b"gzip, deflate, br", ("gzip", "br"), "gzip"),
    (b"br;q=0.5, gzip;q=0.8", ("br", "gzip"), "gzip"),        # the client's q wins over our order
    (b"br;q=0, gzip;q=0.1", ("br", "gzip"), "gzip"),
    (b"gzip;q=0", ("gzip",), None),                           # q=0: not acceptable
    (b"*", ("br", "gzip"), "br"),
    (b"*;q=0.5, gzip", ("br", "gzip"), "gzip"),
    (b"*, br;q=0", ("br", "zstd", "gzip"), "zstd"),            # * covers the codings not named
    (b"*;q=0", ("gzip",), None),
    (b"identity", ("gzip",), None),
    (b"identity;q=1, gzip;q=0.5", ("gzip",), "gzip"),         # identity is always possible anyway
    (b"gzip;q=2, br", ("gzip", "br"), "br"),                  # q out of range: member ignored
    (b"gzip;q=abc", ("gzip",), None),
    (b" , ,gzip ; q=0.3 ,", ("gzip",), "gzip"),               # empty members, spaces
    (b"zstd", ("br", "zstd", "gzip"), "zstd"),
    ("gzip", ("gzip",), "gzip"),                              # str works too
])
def test_choose_encoding(header, available, want):
    assert choose_encoding(header, available) == want


# ----------------------------------------------------------- should_compress --

@pytest.mark.parametrize("ctype,length,min_size,encoded,want", [
    (b"application/json", 1000, None, False, False),         # minimumCompressionSize unset: off
    (b"application/json", 1000, 0, False, True),
    (b"application/json", 0, 0, False, True),                 # 0: every size
    (b"application/json", 999, 1000, False, False),
    (b"application/json", 1000, 1000, False, True),           # ">= minimumCompressionSize"
    (b"application/json", 5000, 1000, True, False),          # Content-Encoding present
    (b"application/json", -1, 1000, False, True),             # streamed, size unknown
    (b"text/event-stream", -1, 0, False, True),
    (b"text/html; charset=utf-8", 5000, 10, False, True),
    (b"image/png", 5000, 10, False, False),
    (b"IMAGE/JPEG", 5000, 10, False, False),
    (b"image/svg+xml", 5000, 10, False, True),
    (b"video/mp4", 5000, 10, False, False),
    (b"application/zip", 5000, 10, False, False),
    (b"application/gzip", 5000, 10, False, False),
    (b"application/octet-stream", 5000, 10, False, False),
    (b"font/woff2", 5000, 10, False, False),
    (b"", 5000, 10, False, True),
    ("application/json", 5000, 10, False, True),
])
def test_should_compress(ctype, length, min_size, encoded, want):
    assert should_compress(ctype, length, min_size, encoded) is want


# ------------------------------------------------------------ round trips --

@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_with_httpx(encoding):
    # httpx picks the decoder from Content-Encoding, as a client of the gateway does.
    data = compress_body(encoding, BODY)
    assert len(data) < len(BODY) // 5
    r = httpx.Response(200, headers={"Content-Encoding": encoding}, content=data)
    assert r.content == BODY


def test_round_trip_with_stdlib_decoders():
    assert gzip.decompress(compress_body("gzip", BODY)) == BODY
    assert zlib.decompress(compress_body("deflate", BODY)) == BODY
    assert brotli.decompress(compress_body("br", BODY)) == BODY
    assert zstandard.ZstdDecompressor().decompressobj().decompress(compress_body("zstd", BODY)) == BODY


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_streamed_chunks_concatenate_to_one_stream(encoding):
    c = Compressor(encoding)
    parts = [c.compress(BODY[i:i + 777]) for i in range(0, len(BODY), 777)]
    parts.append(c.finish())
    r = httpx.Response(200, headers={"Content-Encoding": encoding}, content=b"".join(parts))
    assert r.content == BODY
    with pytest.raises(ValueError):
        c.compress(b"more")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sse_each_event_decodes_when_it_is_sent(encoding):
    # flush_each_chunk: the client's incremental decoder yields every event as
    # soon as its compressed bytes arrive -- nothing waits for the next event.
    decoder = {"gzip": httpx_decoders.GZipDecoder, "deflate": httpx_decoders.DeflateDecoder,
               "br": httpx_decoders.BrotliDecoder, "zstd": httpx_decoders.ZStandardDecoder}[encoding]()
    c = Compressor(encoding, flush_each_chunk=True)
    for i in range(20):
        event = b"id: %d\nevent: tick\ndata: {\"n\": %d}\n\n" % (i, i)
        assert decoder.decode(c.compress(event)) == event
    decoder.decode(c.finish())
    assert decoder.flush() == b""


def test_without_flush_each_chunk_small_chunks_are_buffered():
    c = Compressor("gzip")
    first = c.compress(b"data: 1\n\n")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert d.decompress(first) == b""              # the event is still inside the compressor
    assert d.decompress(c.flush()) == b"data: 1\n\n"   # until flush()


def test_levels_and_unknown_encoding():
    fast, best = compress_body("gzip", BODY, 1), compress_body("gzip", BODY, 9)
    assert gzip.decompress(fast) == gzip.decompress(best) == BODY
    with pytest.raises(ValueError):
        Compressor("lz4")


# --------------------------------------------------------- request bodies --

@pytest.mark.parametrize("encoding,encode", [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b, wbits=-15)),         # raw deflate, as some clients send
    ("br", brotli.compress),
    ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
    ("GZIP", gzip.compress),
])
def test_decode_request_body(encoding, encode):
    assert decode_request_body(encoding.encode(), encode(BODY), 1 << 20) == BODY


def test_decode_identity_and_stacked_codings():
    assert decode_request_body(b"", b"raw", 10) == b"raw"
    assert decode_request_body(b"identity", b"raw", 10) == b"raw"
    stacked = brotli.compress(gzip.compress(BODY))          # gzip applied first, then br
    assert decode_request_body(b"gzip, br", stacked, 1 << 20) == BODY
    two_members = gzip.compress(b"abc") + gzip.compress(b"def")
    assert decode_request_body(b"gzip", two_members, 100) == b"abcdef"
    z = zstandard.ZstdCompressor()
    assert decode_request_body(b"zstd", z.compress(b"abc") + z.compress(b"def"), 100) == b"abcdef"


@pytest.mark.parametrize("encoding,encode", [
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress),
    ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_bomb_is_stopped_at_the_cap(encoding, encode):
    bomb = encode(b"\0" * (64 << 20))                       # 64 MiB of zeros
    assert len(bomb) < 200_000
    with pytest.raises(BodyTooLarge) as e:
        decode_request_body(encoding, bomb, 10 << 20)
    assert e.value.status == 413
    exact = encode(b"x" * 1000)
    assert decode_request_body(encoding, exact, 1000) == b"x" * 1000    # the cap itself passes
    with pytest.raises(BodyTooLarge):
        decode_request_body(encoding, exact, 999)


def test_zstd_bomb_without_content_size_in_the_frame():
    # A streamed frame does not declare its size: the cap must still hold.
    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as w:
        for _ in range(64):
            w.write(b"\0" * (1 << 20))
    with pytest.raises(BodyTooLarge):
        decode_request_body(b"zstd", out.getvalue(), 1 << 20)


@pytest.mark.parametrize("encoding,body", [
    (b"compress", b"x"),                                    # a coding nobody supports
    (b"gzip", b"not gzip at all"),
    (b"gzip", gzip.compress(BODY)[:-20]),                   # truncated
    (b"deflate", os.urandom(64)),
    (b"br", b"\xff\xff\xff\xff not brotli"),
    (b"br", brotli.compress(BODY)[:-5]),
    (b"zstd", b"\x28\xb5\x2f\xfd garbage"),
    (b"zstd", zstandard.ZstdCompressor().compress(BODY)[:-10]),
], ids=["compress", "gzip-not", "gzip-truncated", "deflate-random", "br-not", "br-truncated",
        "zstd-garbage", "zstd-truncated"])     # ids, not the bodies: os.urandom differs per collection
def test_undecodable_bodies_are_415(encoding, body):
    with pytest.raises(UnsupportedEncoding) as e:
        decode_request_body(encoding, body, 1 << 20)
    assert e.value.status == 415
