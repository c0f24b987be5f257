/**
 * The small piece of HTTP/2 (RFC 9113) and HPACK (RFC 7541) that the bulk
 * Read connection speaks (./bulk_read_server.ts, ./bulk_read_client.ts).
 *
 * Why our own HTTP/2 for this: node:http2 under Deno 2.9 frames DATA in
 * 16 KiB pieces whatever SETTINGS_MAX_FRAME_SIZE allows, copies every write
 * three times (a Buffer.concat, into nghttp2, out again per frame) and makes
 * a JavaScript round trip per frame on both sides. Measured on this 2-core
 * machine, a 128 MiB blob Read from the store daemon cost ~3.6 ms CPU/MiB in
 * the daemon and ~2.5 ms in the client, 6.1 ms in all, which caps any
 * two-process transfer on two cores near 330 MiB/s, however the work is
 * spread over threads. Bun's node:http2 is slower still. Plain sockets cost
 * ~0.4 ms/MiB per side here; frames of a whole gRPC message (up to 1 MiB)
 * written straight from the blob's buffers keep close to that.
 *
 * The subset: frames of every type are parsed (unknown types ignored, as the
 * RFC says); DATA and HEADERS without padding; HPACK with the static table
 * only (both ends announce SETTINGS_HEADER_TABLE_SIZE 0) and no Huffman
 * coding. A peer outside that subset gets a connection error. Only our own
 * client and server speak it, and only after both announced
 * {@linkcode BULK_SETTING} (see the modules named above); every other
 * connection is node:http2's.
 *
 * @module
 */

/** The client connection preface. */
export const PREFACE = new TextEncoder().encode(
  "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
);

/**
 * A SETTINGS identifier from the range RFC 9113 leaves for experiments
 * (0xf000-0xffff; unknown settings are ignored by every conforming peer).
 * A client that sends it (value {@linkcode BULK_VERSION}) asks for the bulk
 * Read subset; a server that answers with it agrees.
 */
export const BULK_SETTING = 0xf5b1;
/** The value of {@linkcode BULK_SETTING}: version of this subset. */
export const BULK_VERSION = 1;

/** Frame types. */
export const DATA = 0,
  HEADERS = 1,
  PRIORITY = 2,
  RST_STREAM = 3,
  SETTINGS = 4,
  PUSH_PROMISE = 5,
  PING = 6,
  GOAWAY = 7,
  WINDOW_UPDATE = 8,
  CONTINUATION = 9;

/** Frame flags. */
export const END_STREAM = 0x1,
  ACK = 0x1,
  END_HEADERS = 0x4,
  PADDED = 0x8,
  PRIORITY_FLAG = 0x20;

/** Settings identifiers. */
export const SETTINGS_HEADER_TABLE_SIZE = 1,
  SETTINGS_ENABLE_PUSH = 2,
  SETTINGS_MAX_CONCURRENT_STREAMS = 3,
  SETTINGS_INITIAL_WINDOW_SIZE = 4,
  SETTINGS_MAX_FRAME_SIZE = 5;

/** Error codes. */
export const NO_ERROR = 0,
  PROTOCOL_ERROR = 1,
  INTERNAL_ERROR = 2,
  FLOW_CONTROL_ERROR = 3,
  STREAM_CLOSED = 5,
  FRAME_SIZE_ERROR = 6,
  REFUSED_STREAM = 7,
  CANCEL = 8,
  COMPRESSION_ERROR = 9;

/** The initial flow-control window of RFC 9113 (before any SETTINGS). */
export const DEFAULT_WINDOW = 65_535;
/** The smallest SETTINGS_MAX_FRAME_SIZE (and the default). */
export const DEFAULT_MAX_FRAME = 16_384;
/** The largest window a WINDOW_UPDATE may produce. */
export const MAX_WINDOW = 2 ** 31 - 1;

/** Largest header block (HEADERS plus CONTINUATIONs) either side accepts. */
export const MAX_HEADER_BLOCK = 64 << 10;

/** Adds a CONTINUATION payload to a header block, within {@linkcode MAX_HEADER_BLOCK}. */
export function appendHeaderBlock(parts: Uint8Array[], more: Uint8Array): void {
  let n = more.length;
  for (const p of parts) n += p.length;
  if (n > MAX_HEADER_BLOCK) {
    throw new H2Error(
      PROTOCOL_ERROR,
      `header block over ${MAX_HEADER_BLOCK} bytes`,
    );
  }
  parts.push(more);
}

/** A connection error: the connection ends with GOAWAY and this code. */
export class H2Error extends Error {
  /** The HTTP/2 error code. */
  readonly code: number;
  /** `message` says what was wrong. */
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

/** The 9-byte header of a frame. */
export function frameHeader(
  length: number,
  type: number,
  flags: number,
  stream: number,
): Uint8Array {
  const h = new Uint8Array(9);
  writeFrameHeader(h, 0, length, type, flags, stream);
  return h;
}

/** Writes a frame header into `buf` at `at`. */
export function writeFrameHeader(
  buf: Uint8Array,
  at: number,
  length: number,
  type: number,
  flags: number,
  stream: number,
): void {
  buf[at] = length >>> 16;
  buf[at + 1] = (length >>> 8) & 0xff;
  buf[at + 2] = length & 0xff;
  buf[at + 3] = type;
  buf[at + 4] = flags;
  buf[at + 5] = (stream >>> 24) & 0x7f;
  buf[at + 6] = (stream >>> 16) & 0xff;
  buf[at + 7] = (stream >>> 8) & 0xff;
  buf[at + 8] = stream & 0xff;
}

/** A whole frame with a small payload (control frames). */
export function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  writeFrameHeader(out, 0, payload.length, type, flags, stream);
  out.set(payload, 9);
  return out;
}

/** A SETTINGS frame carrying `settings` (identifier, value pairs). */
export function settingsFrame(settings: [number, number][]): Uint8Array {
  const p = new Uint8Array(6 * settings.length);
  const dv = new DataView(p.buffer);
  settings.forEach(([id, v], i) => {
    dv.setUint16(6 * i, id);
    dv.setUint32(6 * i + 2, v);
  });
  return frame(SETTINGS, 0, 0, p);
}

/** Parses a SETTINGS payload into identifier -> value (later ones win). */
export function parseSettings(payload: Uint8Array): Map<number, number> {
  if (payload.length % 6 !== 0) {
    throw new H2Error(FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6");
  }
  const dv = new DataView(
    payload.buffer,
    payload.byteOffset,
    payload.byteLength,
  );
  const out = new Map<number, number>();
  for (let o = 0; o < payload.length; o += 6) {
    out.set(dv.getUint16(o), dv.getUint32(o + 2));
  }
  return out;
}

/** A WINDOW_UPDATE frame. */
export function windowUpdate(stream: number, increment: number): Uint8Array {
  const p = new Uint8Array(4);
  new DataView(p.buffer).setUint32(0, increment & 0x7fffffff);
  return frame(WINDOW_UPDATE, 0, stream, p);
}

/** An RST_STREAM frame. */
export function rstStream(stream: number, code: number): Uint8Array {
  const p = new Uint8Array(4);
  new DataView(p.buffer).setUint32(0, code);
  return frame(RST_STREAM, 0, stream, p);
}

/** A GOAWAY frame. */
export function goaway(lastStream: number, code: number): Uint8Array {
  const p = new Uint8Array(8);
  const dv = new DataView(p.buffer);
  dv.setUint32(0, lastStream & 0x7fffffff);
  dv.setUint32(4, code);
  return frame(GOAWAY, 0, 0, p);
}

/** The 32-bit big-endian number at `o` of `b` (31 bits where `mask`). */
export function uint32(b: Uint8Array, o: number, mask = false): number {
  const v = ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>>
    0;
  return mask ? v & 0x7fffffff : v;
}

/** What {@linkcode FrameReader} tells its owner. */
export interface FrameSink {
  /** A piece of a DATA frame's payload (a view of the received bytes). */
  data(stream: number, piece: Uint8Array): void;
  /** A DATA frame ended (`length`: its whole payload, for flow control). */
  dataEnd(stream: number, flags: number, length: number): void;
  /** Any other frame, with its whole payload. */
  frame(type: number, flags: number, stream: number, payload: Uint8Array): void;
}

/**
 * Splits received bytes into frames. DATA payloads are passed on as views
 * of the received pieces (no copy); other payloads are collected whole.
 */
export class FrameReader {
  readonly #sink: FrameSink;
  readonly #maxFrame: number;
  readonly #head = new Uint8Array(9);
  #headLen = 0;
  /** Payload bytes of the current frame still to come; -1 between frames. */
  #left = -1;
  #type = 0;
  #flags = 0;
  #stream = 0;
  #length = 0;
  #payload: Uint8Array | undefined;

  /** Frames longer than `maxFrame` (what we announced) are errors. */
  constructor(sink: FrameSink, maxFrame: number) {
    this.#sink = sink;
    this.#maxFrame = maxFrame;
  }

  /** Feeds received bytes; throws {@linkcode H2Error} on a bad frame. */
  push(d: Uint8Array): void {
    let o = 0;
    while (o < d.length) {
      if (this.#left < 0) {
        const take = Math.min(9 - this.#headLen, d.length - o);
        this.#head.set(d.subarray(o, o + take), this.#headLen);
        this.#headLen += take;
        o += take;
        if (this.#headLen < 9) return;
        this.#headLen = 0;
        this.#start();
        if (this.#left === 0) this.#finish();
        continue;
      }
      const take = Math.min(this.#left, d.length - o);
      if (this.#type === DATA) {
        this.#sink.data(this.#stream, d.subarray(o, o + take));
      } else {
        this.#payload!.set(
          d.subarray(o, o + take),
          this.#length - this.#left,
        );
      }
      this.#left -= take;
      o += take;
      if (this.#left === 0) this.#finish();
    }
  }

  #start(): void {
    const h = this.#head;
    this.#length = (h[0] << 16) | (h[1] << 8) | h[2];
    this.#type = h[3];
    this.#flags = h[4];
    this.#stream = uint32(h, 5, true);
    if (this.#length > this.#maxFrame) {
      throw new H2Error(
        FRAME_SIZE_ERROR,
        `frame of ${this.#length} bytes, over the ${this.#maxFrame} announced`,
      );
    }
    if (this.#type === DATA) {
      if (this.#flags & PADDED) {
        throw new H2Error(PROTOCOL_ERROR, "padded DATA is not supported here");
      }
      if (this.#stream === 0) {
        throw new H2Error(PROTOCOL_ERROR, "DATA on stream 0");
      }
      this.#payload = undefined;
    } else {
      this.#payload = new Uint8Array(this.#length);
    }
    this.#left = this.#length;
  }

  #finish(): void {
    this.#left = -1;
    if (this.#type === DATA) {
      this.#sink.dataEnd(this.#stream, this.#flags, this.#length);
    } else {
      const p = this.#payload!;
      this.#payload = undefined;
      this.#sink.frame(this.#type, this.#flags, this.#stream, p);
    }
  }
}

/**
 * The header block of a HEADERS frame payload (padding and priority fields
 * removed).
 */
export function headerBlock(flags: number, payload: Uint8Array): Uint8Array {
  let start = 0;
  let end = payload.length;
  if (flags & PADDED) {
    if (payload.length < 1) throw new H2Error(PROTOCOL_ERROR, "bad padding");
    end -= payload[0];
    start = 1;
  }
  if (flags & PRIORITY_FLAG) start += 5;
  if (start > end) throw new H2Error(PROTOCOL_ERROR, "bad HEADERS padding");
  return payload.subarray(start, end);
}

// RFC 7541 Appendix A: the static table (index 1..61).
const STATIC: [string, string][] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

const utf8 = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** Appends an HPACK integer with an `n`-bit prefix (first byte's high bits `first`). */
function pushInt(out: number[], first: number, n: number, v: number): void {
  const max = (1 << n) - 1;
  if (v < max) {
    out.push(first | v);
    return;
  }
  out.push(first | max);
  v -= max;
  while (v >= 128) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/**
 * Encodes headers as HPACK literals without indexing (new names, no
 * Huffman), except `:status: 200` and `:method: POST` (static entries).
 */
export function encodeHeaders(headers: [string, string][]): Uint8Array {
  const out: number[] = [];
  for (const [name, value] of headers) {
    if (name === ":status" && value === "200") {
      out.push(0x88);
      continue;
    }
    if (name === ":method" && value === "POST") {
      out.push(0x83);
      continue;
    }
    out.push(0x00);
    const n = utf8.encode(name);
    pushInt(out, 0, 7, n.length);
    for (const b of n) out.push(b);
    const v = utf8.encode(value);
    pushInt(out, 0, 7, v.length);
    for (const b of v) out.push(b);
  }
  return Uint8Array.from(out);
}

/**
 * Decodes a header block in the subset (static table, literals without
 * Huffman, a table size of 0). Throws {@linkcode H2Error} COMPRESSION_ERROR
 * otherwise.
 */
export function decodeHeaders(block: Uint8Array): [string, string][] {
  const out: [string, string][] = [];
  let o = 0;
  const int = (n: number): number => {
    if (o >= block.length) throw compression("truncated integer");
    const max = (1 << n) - 1;
    let v = block[o++] & max;
    if (v < max) return v;
    let shift = 0;
    while (true) {
      if (o >= block.length || shift > 28) throw compression("bad integer");
      const b = block[o++];
      v += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) return v;
    }
  };
  const str = (): string => {
    if (o >= block.length) throw compression("truncated string");
    if (block[o] & 0x80) throw compression("Huffman-coded strings");
    const len = int(7);
    if (o + len > block.length) throw compression("truncated string");
    const s = latin1.decode(block.subarray(o, o + len));
    o += len;
    return s;
  };
  const entry = (i: number): [string, string] => {
    if (i < 1 || i > STATIC.length) {
      throw compression(`header table index ${i}`);
    }
    return STATIC[i - 1];
  };
  while (o < block.length) {
    const b = block[o];
    if (b & 0x80) { // indexed field
      out.push([...entry(int(7))]);
    } else if ((b & 0xe0) === 0x20) { // dynamic table size update
      if (int(5) !== 0) throw compression("a dynamic table");
    } else {
      // literal: with incremental indexing (01), without (0000), never (0001);
      // with a table size of 0 nothing is stored.
      const idx = (b & 0xc0) === 0x40 ? int(6) : int(4);
      const name = idx === 0 ? str() : entry(idx)[0];
      out.push([name, str()]);
    }
  }
  return out;
}

function compression(what: string): H2Error {
  return new H2Error(COMPRESSION_ERROR, `HPACK: ${what} not supported here`);
}
