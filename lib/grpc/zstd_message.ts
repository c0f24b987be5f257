/**
 * gRPC message compression `zstd` as the bulk Read connection uses it
 * (./bulk_read_server.ts, ./bulk_read_client.ts): the daemon sends each
 * chunk of the local store as the zstd frame it is stored in, without
 * decompressing or hashing it (the client verifies every chunk anyway), so
 * a compressed message's payload is
 *
 *   a tiny frame holding the BlobChunk's start (field 1 tag and length),
 *   followed by the chunk's stored frame,
 *
 * which is a valid zstd stream (concatenated frames decompress to the
 * concatenation, RFC 8878 section 3.1) of the BlobChunk message: what the
 * gRPC compression spec asks for, readable by any zstd decoder.
 *
 * Decoding walks the frames' block headers: where every block is stored raw
 * (zstd's choice for incompressible data) or as a run of one byte, the
 * content is handed out as views of the received bytes, with no copy and no
 * decompression call. A frame with compressed blocks (or a checksum) goes
 * through libzstd (./../runtime/zstd.ts), or `node:zlib` without FFI.
 * Why the walk is our own code: no zstd binding hands out a raw block's
 * bytes in place, and for incompressible chunks that copy is most of the
 * work; the walk only reads headers (RFC 8878 section 3.1.1).
 *
 * @module
 */
import * as zlib from "node:zlib";
import { type ZstdDecompressor, zstdDecompressor } from "../runtime/zstd.ts";
import { ffiGranted } from "../runtime/raw_socket.ts";

/** The message encoding's name in `grpc-encoding` / `grpc-accept-encoding`. */
export const ZSTD_ENCODING = "zstd";

const MAGIC = 0xfd2fb528;
const BLOCK_RAW = 0;
const BLOCK_RLE = 1;
const BLOCK_COMPRESSED = 2;

let unzstd: ZstdDecompressor | undefined;
let loading: Promise<unknown> | undefined;

/**
 * Loads libzstd for frames with compressed blocks (without it, `node:zlib`
 * decodes them, more slowly). Safe to call often.
 */
export function loadZstd(): Promise<unknown> {
  if (!ffiGranted()) return Promise.resolve(); // never a permission prompt
  return loading ??= zstdDecompressor().then((d) => unzstd = d, () => {});
}

/**
 * One zstd frame holding `bytes` (at most 255) in a single raw block, with
 * its content size recorded.
 */
export function rawFrame(bytes: Uint8Array): Uint8Array {
  if (bytes.length > 255) throw new RangeError("rawFrame: at most 255 bytes");
  const f = new Uint8Array(9 + bytes.length);
  new DataView(f.buffer).setUint32(0, MAGIC, true);
  f[4] = 0x20; // single segment, 1-byte content size, no checksum, no dictionary
  f[5] = bytes.length;
  const h = 1 | (BLOCK_RAW << 1) | (bytes.length << 3); // last block, raw
  f[6] = h & 0xff;
  f[7] = (h >>> 8) & 0xff;
  f[8] = h >>> 16;
  f.set(bytes, 9);
  return f;
}

/**
 * The content size recorded in the header of the zstd frame `frame` starts
 * with, or `undefined` if it records none or is not a zstd frame.
 */
export function frameContentSize(frame: Uint8Array): number | undefined {
  try {
    const c = new Cursor([frame], frame.length);
    if (c.uint(4) !== MAGIC) return undefined;
    return frameHeader(c).contentSize;
  } catch {
    return undefined;
  }
}

/**
 * The header of the zstd frame `bytes` starts with: its length (up to the
 * first block header), the content size it records and whether a checksum
 * follows the blocks; `undefined` if `bytes` does not start with a whole
 * frame header (18 bytes are always enough).
 */
export function frameHeaderOf(
  bytes: Uint8Array,
):
  | { length: number; contentSize: number | undefined; checksum: boolean }
  | undefined {
  try {
    const c = new Cursor([bytes], bytes.length);
    if (c.uint(4) !== MAGIC) return undefined;
    const h = frameHeader(c);
    return { length: c.pos, ...h };
  } catch {
    return undefined;
  }
}

/** Forward reads over a list of byte arrays taken as one. */
class Cursor {
  readonly #pieces: Uint8Array[];
  #i = 0;
  #o = 0;
  /** Position from the start. */
  pos = 0;
  readonly total: number;

  constructor(pieces: Uint8Array[], total: number) {
    this.#pieces = pieces;
    this.total = total;
  }

  #need(n: number): void {
    if (this.pos + n > this.total) {
      throw new Error(`frame cut short at byte ${this.pos}`);
    }
  }

  byte(): number {
    this.#need(1);
    while (this.#o >= this.#pieces[this.#i].length) {
      this.#i++;
      this.#o = 0;
    }
    this.pos++;
    return this.#pieces[this.#i][this.#o++];
  }

  /** A little-endian unsigned number of `n` (<= 8) bytes. */
  uint(n: number): number {
    let v = 0;
    for (let k = 0; k < n; k++) v += this.byte() * 2 ** (8 * k);
    return v;
  }

  /** Views of the next `n` bytes (appended to `out`). */
  take(n: number, out: Uint8Array[]): void {
    this.#need(n);
    this.pos += n;
    while (n > 0) {
      const p = this.#pieces[this.#i];
      const k = Math.min(n, p.length - this.#o);
      if (k > 0) out.push(p.subarray(this.#o, this.#o + k));
      n -= k;
      this.#o += k;
      if (this.#o >= p.length && n > 0) {
        this.#i++;
        this.#o = 0;
      }
    }
  }

  skip(n: number): void {
    this.take(n, []);
  }
}

/** Reads a frame header (after the magic number). */
function frameHeader(
  c: Cursor,
): { contentSize: number | undefined; checksum: boolean } {
  const fhd = c.byte();
  if (fhd & 0x08) throw new Error("reserved frame header bit set");
  const fcsFlag = fhd >>> 6;
  const single = (fhd & 0x20) !== 0;
  if (!single) c.skip(1); // window descriptor
  c.skip([0, 1, 2, 4][fhd & 3]); // dictionary id
  const fcsBytes = fcsFlag === 0 ? (single ? 1 : 0) : [0, 2, 4, 8][fcsFlag];
  let contentSize: number | undefined;
  if (fcsBytes > 0) {
    contentSize = c.uint(fcsBytes) + (fcsBytes === 2 ? 256 : 0);
  }
  return { contentSize, checksum: (fhd & 0x04) !== 0 };
}

/**
 * The content of a zstd stream given as `pieces` (`total` bytes), as views
 * of them where blocks are raw; throws an Error saying what is wrong with a
 * damaged stream or one decoding to more than `maxOut` bytes.
 */
export function decodeZstd(
  pieces: Uint8Array[],
  total: number,
  maxOut: number,
): Uint8Array[] {
  const c = new Cursor(pieces, total);
  const out: Uint8Array[] = [];
  let outLen = 0;
  while (c.pos < c.total) {
    const start = c.pos;
    const magic = c.uint(4);
    if (magic >= 0x184d2a50 && magic <= 0x184d2a5f) { // skippable frame
      c.skip(c.uint(4));
      continue;
    }
    if (magic !== MAGIC) {
      throw new Error(`not a zstd frame at byte ${start}`);
    }
    const { contentSize, checksum } = frameHeader(c);
    const content: Uint8Array[] = [];
    let size = 0;
    let simple = !checksum;
    while (true) {
      const h = c.uint(3);
      const type = (h >>> 1) & 3;
      const n = h >>> 3;
      if (type === BLOCK_RAW || type === BLOCK_COMPRESSED) {
        if (simple && type === BLOCK_RAW) c.take(n, content);
        else c.skip(n);
        if (type === BLOCK_COMPRESSED) simple = false;
      } else if (type === BLOCK_RLE) {
        const b = c.byte();
        if (simple) content.push(new Uint8Array(n).fill(b));
      } else {
        throw new Error("reserved block type");
      }
      if (type !== BLOCK_COMPRESSED) size += n;
      if (outLen + size > maxOut) {
        throw new Error(`decodes to more than ${maxOut} bytes`);
      }
      if (h & 1) break;
    }
    if (checksum) c.skip(4);
    if (simple) {
      if (contentSize !== undefined && contentSize !== size) {
        throw new Error(
          `frame at byte ${start} holds ${size} bytes, its header says ${contentSize}`,
        );
      }
      for (const p of content) out.push(p);
      outLen += size;
      continue;
    }
    // Compressed blocks: the frame's bytes in one array, through a decoder.
    const bytes = new Uint8Array(c.pos - start);
    const parts: Uint8Array[] = [];
    const from = new Cursor(pieces, total);
    from.skip(start);
    from.take(bytes.length, parts);
    let o = 0;
    for (const p of parts) {
      bytes.set(p, o);
      o += p.length;
    }
    let data: Uint8Array;
    if (
      unzstd && contentSize !== undefined && contentSize <= maxOut - outLen
    ) {
      data = unzstd.decompress(bytes, contentSize);
    } else {
      const b = zlib.zstdDecompressSync(bytes, {
        maxOutputLength: Math.max(1, maxOut - outLen),
      });
      data = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      if (contentSize !== undefined && data.length !== contentSize) {
        throw new Error(
          `frame at byte ${start} holds ${data.length} bytes, its header says ${contentSize}`,
        );
      }
    }
    if (data.length > 0) out.push(data);
    outLen += data.length;
  }
  return out;
}
