"""Response compression and compressed request bodies, as API Gateway does them.

Responses (API Gateway's rules, docs/compression.md):
  - only when the API sets minimumCompressionSize (0..10485760 bytes);
  - only when the request's Accept-Encoding names a coding the gateway offers
    (no Accept-Encoding header: no compression, although RFC 9110 reads it as "*");
  - only when the integration response has no Content-Encoding;
  - only when the body (after mapping) is at least minimumCompressionSize bytes.
fastgate adds: types that are already compressed (images, audio, video,
archives, fonts) are sent as they are; br and zstd beside gzip and deflate.

Request bodies: a Content-Encoding of gzip, deflate, br or zstd is decoded
before validation and mapping; an unknown coding or a body that does not
decode is 415 (API Gateway's answer), a body that decodes past the size cap
is 413 (never decoded in full: the decoders stop at the cap + 1 byte).

Streaming: a Compressor built with flush_each_chunk=True returns, for every
chunk, bytes the client can decode at once (a zlib sync flush, a brotli
flush, a zstd block flush), so each Server-Sent Event reaches the client
when the upstream sends it. Without it, compress() may return b"" and keep
the data until more arrives (better ratio for bodies sent in one piece).
"""
import io
import zlib

import brotli
import zstandard

# Codings the gateway can produce, in the default preference order (server side
# tie-break among equal q-values). gzip alone is what API Gateway offers (plus deflate).
ENCODINGS = ("br", "zstd", "gzip", "deflate")
DEFAULT_AVAILABLE = ("br", "zstd", "gzip")
MIN_COMPRESSION_SIZE_MAX = 10485760   # bytes: API Gateway's largest minimumCompressionSize
DEFAULT_LEVELS = {"gzip": 6, "deflate": 6, "br": 4, "zstd": 3}   # ~zlib-6 speed for br and zstd
_ALIASES = {"x-gzip": "gzip"}         # RFC 9110 s8.4.1.3: x-gzip is gzip

# Media types that are compressed already (or are random bytes): compressing
# them again costs CPU and usually grows them.
_SKIP_TOP = (b"image/", b"audio/", b"video/", b"font/")
_SKIP_TYPES = frozenset((
    b"application/zip", b"application/gzip", b"application/x-gzip", b"application/zstd",
    b"application/x-bzip2", b"application/x-xz", b"application/x-7z-compressed",
    b"application/x-rar-compressed", b"application/vnd.rar", b"application/pdf",
    b"application/octet-stream", b"application/font-woff", b"application/x-font-woff",
    b"application/wasm",
))
_COMPRESSIBLE_IMAGES = frozenset((b"image/svg+xml", b"image/x-icon", b"image/bmp"))


class RequestBodyError(ValueError):
    """A request body the gateway cannot hand to validation: `status` says how
    API Gateway answers it."""
    status = 400


class UnsupportedEncoding(RequestBodyError):
    """Content-Encoding not supported, or the body is not encoded with it (API Gateway: 415)."""
    status = 415


class BodyTooLarge(RequestBodyError):
    """The decoded body would exceed the size cap: a decompression bomb or just
    too big (API Gateway: 413 Request Entity Too Large, its 10 MB payload limit)."""
    status = 413


def _parse_q(params):
    """The q of one Accept-Encoding member's parameters; None when malformed."""
    q = 1.0
    for p in params:
        name, _, value = p.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            if not 0.0 <= q <= 1.0:
                return None
    return q


def choose_encoding(accept_encoding, available=DEFAULT_AVAILABLE):
    """The coding to answer with for this Accept-Encoding (RFC 9110 s12.5.3),
    or None for identity. `available`: the codings offered, most preferred
    first; among codings of equal q the earlier one wins.

    "gzip;q=0" refuses gzip; "*" stands for every coding not named; an absent
    or empty header compresses nothing (API Gateway's rule); identity never
    needs choosing -- the caller sends the body as it is on None."""
    if not accept_encoding:
        return None
    if isinstance(accept_encoding, (bytes, bytearray)):
        accept_encoding = accept_encoding.decode("latin-1")
    named = {}
    star = None
    for member in accept_encoding.split(","):
        token, *params = member.split(";")
        token = token.strip().lower()
        if not token:
            continue
        q = _parse_q(params)
        if q is None:
            continue
        token = _ALIASES.get(token, token)
        if token == "*":
            star = q
        else:
            named[token] = max(q, named.get(token, 0.0))
    best, best_q = None, 0.0
    for coding in available:
        q = named.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    return best


def should_compress(content_type, content_length, min_size, already_encoded):
    """Compress this response? content_type: bytes or str (parameters allowed);
    content_length: bytes of the body, -1 when unknown (streamed: compressed,
    its size cannot be compared); min_size: the API's minimumCompressionSize,
    None = compression off; already_encoded: the response has a Content-Encoding
    (API Gateway then passes it through untouched). At least min_size bytes
    are compressed (API Gateway: "greater than or equal to")."""
    if min_size is None or already_encoded:
        return False
    if 0 <= content_length < min_size:
        return False
    if content_type:
        if isinstance(content_type, str):
            content_type = content_type.encode("latin-1")
        media = content_type.split(b";", 1)[0].strip().lower()
        if media in _SKIP_TYPES:
            return False
        if media.startswith(_SKIP_TOP) and media not in _COMPRESSIBLE_IMAGES:
            return False
    return True


class Compressor:
    """One response body's compressor: compress(chunk) as the body arrives,
    finish() once at the end. Output is the Content-Encoding `encoding`.

    flush_each_chunk=True (streams: chunked responses, text/event-stream):
    every compress() returns everything given so far in decodable form, so no
    event waits in the compressor. flush() does the same on demand."""

    __slots__ = ("encoding", "flush_each_chunk", "_c", "_kind", "_done")

    def __init__(self, encoding, level=None, flush_each_chunk=False):
        if encoding not in DEFAULT_LEVELS:
            raise ValueError(f"unsupported encoding {encoding!r}; one of {ENCODINGS}")
        level = DEFAULT_LEVELS[encoding] if level is None else level
        self.encoding = encoding
        self.flush_each_chunk = flush_each_chunk
        self._done = False
        if encoding == "gzip":
            self._c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            # HTTP's "deflate" is the zlib format (RFC 9110 s8.4.1.2), not raw deflate
            self._c = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS)
        elif encoding == "br":
            self._c = brotli.Compressor(quality=level)
        elif encoding == "zstd":
            self._c = zstandard.ZstdCompressor(level=level).compressobj()
        self._kind = encoding

    def compress(self, chunk):
        """Compressed bytes for chunk (may be b"" unless flush_each_chunk)."""
        if self._done:
            raise ValueError("compress() after finish()")
        if self._kind == "br":
            out = self._c.process(chunk)
        else:
            out = self._c.compress(chunk)
        if self.flush_each_chunk:
            out += self.flush()
        return out

    def flush(self):
        """Everything compressed so far, decodable now; the stream goes on."""
        if self._kind == "br":
            return self._c.flush()
        if self._kind == "zstd":
            return self._c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self):
        """The end of the compressed stream (trailer, checksum); call once."""
        self._done = True
        if self._kind == "br":
            return self._c.finish()
        return self._c.flush()


def compress_body(encoding, body, level=None):
    """A whole body in one go (mapped or cached responses)."""
    c = Compressor(encoding, level)
    return c.compress(body) + c.finish()


# ------------------------------------------------------------ request bodies --

def _gunzip(data, cap):
    out = bytearray()
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += d.decompress(data, cap + 1 - len(out))
        if len(out) > cap:
            raise BodyTooLarge(f"request body decodes to more than {cap} bytes")
        if d.unconsumed_tail:
            raise BodyTooLarge(f"request body decodes to more than {cap} bytes")
        if not d.eof:
            raise UnsupportedEncoding("request body is not complete gzip data")
        data = d.unused_data        # RFC 1952: a gzip file may hold several members
    return bytes(out)


def _inflate(data, cap):
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):   # zlib format, then raw deflate (what some clients send)
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(data, cap + 1)
        except zlib.error:
            continue
        if len(out) > cap or d.unconsumed_tail:
            raise BodyTooLarge(f"request body decodes to more than {cap} bytes")
        if d.eof and not d.unused_data:
            return out
    raise UnsupportedEncoding("request body is not deflate data")


def _unbrotli(data, cap):
    d = brotli.Decompressor()
    out = d.process(data, output_buffer_limit=cap + 1)
    if len(out) > cap:
        raise BodyTooLarge(f"request body decodes to more than {cap} bytes")
    if not d.is_finished():
        raise UnsupportedEncoding("request body is not complete brotli data")
    return out


def _unzstd(data, cap):
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    # Pass 1 bounds the output (a decompressobj has no output limit); it reads a
    # truncated frame as a short one, so pass 2, now known to stay under the
    # cap, decodes frame by frame and checks each one ends.
    size = 0
    while size <= cap:
        part = reader.read(cap + 1 - size)         # may return less than asked before the end
        if not part:
            break
        size += len(part)
    if size > cap:
        raise BodyTooLarge(f"request body decodes to more than {cap} bytes")
    out = bytearray()
    while data:
        d = zstandard.ZstdDecompressor().decompressobj()
        out += d.decompress(data)
        if not d.eof:
            raise UnsupportedEncoding("request body is not complete zstd data")
        data = d.unused_data
    return bytes(out)


_DECODERS = {"gzip": _gunzip, "x-gzip": _gunzip, "deflate": _inflate, "br": _unbrotli, "zstd": _unzstd}


def decode_request_body(content_encoding, body, max_size):
    """The body as the client meant it: Content-Encoding's codings undone in
    reverse order ("gzip, br" was gzipped, then brotli'd). identity or no
    header returns body itself. Raises UnsupportedEncoding (415) for an
    unknown coding or a body that does not decode, BodyTooLarge (413) when
    any stage would pass max_size bytes -- checked as it decodes, so a
    1 KiB bomb never becomes 1 GiB in memory."""
    if not content_encoding:
        return body
    if isinstance(content_encoding, (bytes, bytearray)):
        content_encoding = content_encoding.decode("latin-1")
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        decoder = _DECODERS.get(coding)
        if decoder is None:
            raise UnsupportedEncoding(f"unsupported Content-Encoding {coding!r}")
        try:
            body = decoder(body, max_size)
        except RequestBodyError:
            raise
        except (zlib.error, brotli.error, zstandard.ZstdError) as e:
            raise UnsupportedEncoding(f"request body is not valid {coding}: {e}") from None
    return body
