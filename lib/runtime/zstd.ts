/**
 * zstd compression and decompression through the system's libzstd
 * (`libzstd.so.1`) via FFI, with ONE context of each kind reused for every
 * call.
 *
 * Why: `node:zlib`'s `zstdCompressSync` builds a new compressor (context,
 * handle, buffers) per call. For castore's ~9,000 chunks per GiB that set-up
 * measured ~0.45 s of the 1 GiB import's main-thread time, and the whole
 * call ~1.7x the FFI one (1,450 corpus chunks: ~140 ms vs ~80 ms, Deno 2.9).
 * Decompression likewise: `zstdDecompressSync` pays that set-up per chunk
 * and assembles its output from 64 KiB pieces, while the FFI call writes
 * straight into an array of the chunk's known size.
 * Callers fall back to `node:zlib` where this returns `undefined` (no FFI,
 * no libzstd). Frames are standard zstd frames (content size recorded, no
 * checksum), read by any zstd decoder, `node:zlib` included.
 *
 * @module
 */

/** A reusable zstd compressor. */
export interface ZstdCompressor {
  /** Which library does the work (for logs and benchmarks). */
  readonly implementation: "libzstd-ffi";
  /** One zstd frame of `data` at `level`, in a new array of its exact size. */
  compress(data: Uint8Array, level: number): Uint8Array;
  /** The most bytes a frame of `n` bytes of content can take. */
  bound(n: number): number;
  /**
   * One zstd frame of `data` at `level` written to the start of `out`
   * (at least `bound(data.length)` bytes); returns the frame's length.
   */
  compressInto(data: Uint8Array, level: number, out: Uint8Array): number;
}

/** A reusable zstd decompressor for frames of known content size. */
export interface ZstdDecompressor {
  /** Which library does the work (for logs and benchmarks). */
  readonly implementation: "libzstd-ffi";
  /**
   * The content of one zstd frame, which must be exactly `size` bytes, in a
   * new array; throws an `Error` saying what is wrong otherwise (damaged
   * frame, more or fewer bytes).
   */
  decompress(frame: Uint8Array, size: number): Uint8Array;
  /**
   * The content size a frame's header records, or `undefined` when it
   * records none (streaming writers, `node:zlib`) or is not a frame header.
   */
  contentSize(frame: Uint8Array): number | undefined;
}

// deno-lint-ignore no-explicit-any
type Any = any;

interface RawZstd {
  compressCCtx(
    cctx: unknown,
    dst: Uint8Array,
    dstCap: number,
    src: Uint8Array,
    srcSize: number,
    level: number,
  ): number;
  compressBound(n: number): number;
  isError(code: number): boolean;
  errorName(code: number): string;
  cctx: unknown;
  decompressDCtx(
    dctx: unknown,
    dst: Uint8Array,
    dstCap: number,
    src: Uint8Array,
    srcSize: number,
  ): number;
  dctx: unknown;
  frameContentSize(src: Uint8Array, srcSize: number): number;
}

/**
 * A size_t result of libzstd as a number: sizes as they are, error codes
 * (the top of the size_t range, which a double cannot tell apart) as
 * negative numbers.
 */
function sizeOrCode(r: number | bigint): number {
  const b = BigInt(r);
  return b > 0xFFFFFFFFFFFF0000n
    ? -Number(0x10000000000000000n - b)
    : Number(b);
}

/** The size_t error code of a negative {@linkcode sizeOrCode} result. */
function errorCode(code: number): bigint {
  return 0x10000000000000000n - BigInt(-code);
}

function compressorOver(raw: RawZstd): ZstdCompressor {
  let out = new Uint8Array(0);
  return {
    implementation: "libzstd-ffi",
    compress(data, level) {
      const bound = raw.compressBound(data.length);
      if (out.length < bound) out = new Uint8Array(Math.max(bound, 1 << 16));
      const n = raw.compressCCtx(
        raw.cctx,
        out,
        out.length,
        data,
        data.length,
        level,
      );
      if (raw.isError(n)) {
        throw new Error(`zstd compression failed: ${raw.errorName(n)}`);
      }
      return out.slice(0, n);
    },
    bound: (n) => raw.compressBound(n),
    compressInto(data, level, dst) {
      const n = raw.compressCCtx(
        raw.cctx,
        dst,
        dst.length,
        data,
        data.length,
        level,
      );
      if (raw.isError(n)) {
        throw new Error(`zstd compression failed: ${raw.errorName(n)}`);
      }
      return n;
    },
  };
}

/**
 * The compression calls of libzstd as `Deno.dlopen` declares them (also
 * given, as JSON, to the ingest worker's source: ./ingest_worker.ts).
 */
export const DENO_ZSTD_COMPRESS_SYMBOLS = {
  ZSTD_createCCtx: { parameters: [], result: "pointer" },
  ZSTD_compressCCtx: {
    parameters: ["pointer", "buffer", "usize", "buffer", "usize", "i32"],
    result: "usize",
  },
  ZSTD_compressBound: { parameters: ["usize"], result: "usize" },
  ZSTD_isError: { parameters: ["usize"], result: "u32" },
} as const;

function loadDeno(): RawZstd {
  const D = (globalThis as Any).Deno;
  const lib = D.dlopen("libzstd.so.1", {
    ...DENO_ZSTD_COMPRESS_SYMBOLS,
    ZSTD_getErrorName: { parameters: ["usize"], result: "pointer" },
    ZSTD_createDCtx: { parameters: [], result: "pointer" },
    ZSTD_decompressDCtx: {
      parameters: ["pointer", "buffer", "usize", "buffer", "usize"],
      result: "usize",
    },
    ZSTD_getFrameContentSize: {
      parameters: ["buffer", "usize"],
      result: "u64",
    },
  });
  const s = lib.symbols;
  const cctx = s.ZSTD_createCCtx();
  if (cctx === null) throw new Error("ZSTD_createCCtx failed");
  const dctx = s.ZSTD_createDCtx();
  if (dctx === null) throw new Error("ZSTD_createDCtx failed");
  return {
    cctx,
    dctx,
    decompressDCtx: (d, dst, cap, src, n) =>
      sizeOrCode(s.ZSTD_decompressDCtx(d, dst, BigInt(cap), src, BigInt(n))),
    frameContentSize: (src, n) =>
      sizeOrCode(s.ZSTD_getFrameContentSize(src, BigInt(n))),
    compressCCtx: (c, dst, cap, src, n, level) =>
      sizeOrCode(
        s.ZSTD_compressCCtx(c, dst, BigInt(cap), src, BigInt(n), level),
      ),
    compressBound: (n) => Number(s.ZSTD_compressBound(BigInt(n))),
    isError: (code) => code < 0,
    errorName: (code) => {
      const p = s.ZSTD_getErrorName(errorCode(code));
      return p === null
        ? `error ${code}`
        : new D.UnsafePointerView(p).getCString();
    },
  };
}

async function loadBun(): Promise<RawZstd> {
  const ffi: Any = await import(["bun", "ffi"].join(":"));
  const { dlopen, FFIType, CString } = ffi;
  const lib = dlopen("libzstd.so.1", {
    ZSTD_createCCtx: { args: [], returns: FFIType.ptr },
    ZSTD_compressCCtx: {
      args: [
        FFIType.ptr,
        FFIType.ptr,
        FFIType.u64,
        FFIType.ptr,
        FFIType.u64,
        FFIType.i32,
      ],
      returns: FFIType.u64_fast,
    },
    ZSTD_compressBound: { args: [FFIType.u64], returns: FFIType.u64_fast },
    ZSTD_isError: { args: [FFIType.u64], returns: FFIType.u32 },
    ZSTD_getErrorName: { args: [FFIType.u64], returns: FFIType.ptr },
    ZSTD_createDCtx: { args: [], returns: FFIType.ptr },
    ZSTD_decompressDCtx: {
      args: [FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.u64],
      returns: FFIType.u64_fast,
    },
    ZSTD_getFrameContentSize: {
      args: [FFIType.ptr, FFIType.u64],
      returns: FFIType.u64_fast,
    },
  });
  const s = lib.symbols;
  const cctx = s.ZSTD_createCCtx();
  if (!cctx) throw new Error("ZSTD_createCCtx failed");
  const dctx = s.ZSTD_createDCtx();
  if (!dctx) throw new Error("ZSTD_createDCtx failed");
  return {
    cctx,
    dctx,
    decompressDCtx: (d, dst, cap, src, n) =>
      sizeOrCode(s.ZSTD_decompressDCtx(d, dst, cap, src, n)),
    frameContentSize: (src, n) =>
      sizeOrCode(s.ZSTD_getFrameContentSize(src, n)),
    compressCCtx: (c, dst, cap, src, n, level) =>
      sizeOrCode(s.ZSTD_compressCCtx(c, dst, cap, src, n, level)),
    compressBound: (n) => Number(s.ZSTD_compressBound(n)),
    isError: (code) => code < 0,
    errorName: (code) => {
      const p = s.ZSTD_getErrorName(errorCode(code));
      return p ? String(new CString(p)) : `error ${code}`;
    },
  };
}

function decompressorOver(raw: RawZstd): ZstdDecompressor {
  // A zero-length array may reach FFI as a null pointer: an empty content
  // is written to a 1-byte scratch array (capacity 0) instead.
  const scratch = new Uint8Array(1);
  return {
    implementation: "libzstd-ffi",
    decompress(frame, size) {
      if (frame.length === 0) {
        throw new Error("zstd decompression failed: no frame (empty input)");
      }
      const out = new Uint8Array(size);
      const n = raw.decompressDCtx(
        raw.dctx,
        size > 0 ? out : scratch,
        size,
        frame,
        frame.length,
      );
      if (raw.isError(n)) {
        throw new Error(`zstd decompression failed: ${raw.errorName(n)}`);
      }
      if (n !== size) {
        throw new Error(`zstd frame holds ${n} bytes, expected ${size}`);
      }
      return out;
    },
    contentSize(frame) {
      if (frame.length === 0) return undefined;
      // Negative: ZSTD_CONTENTSIZE_UNKNOWN or _ERROR.
      const n = raw.frameContentSize(frame, frame.length);
      return n >= 0 ? n : undefined;
    },
  };
}

let loading: Promise<RawZstd | undefined> | undefined;

/** The raw binding, loaded once; `undefined` where it cannot be. */
function raw(): Promise<RawZstd | undefined> {
  loading ??= (async () => {
    const g = globalThis as Any;
    try {
      return g.Bun !== undefined
        ? await loadBun()
        : g.Deno !== undefined
        ? loadDeno()
        : undefined;
    } catch {
      return undefined;
    }
  })();
  return loading;
}

let compressor: Promise<ZstdCompressor | undefined> | undefined;
let decompressor: Promise<ZstdDecompressor | undefined> | undefined;

/**
 * The libzstd compressor, or `undefined` where it cannot be loaded (no FFI
 * permission, no libzstd.so.1, a runtime without FFI). Loaded once.
 */
export function zstdCompressor(): Promise<ZstdCompressor | undefined> {
  compressor ??= raw().then((r) => {
    if (!r) return undefined;
    try {
      const c = compressorOver(r);
      c.compress(new Uint8Array(16), 1); // fails here, not mid-import
      return c;
    } catch {
      return undefined;
    }
  });
  return compressor;
}

/** The libzstd decompressor, or `undefined` where it cannot be loaded. */
export function zstdDecompressor(): Promise<ZstdDecompressor | undefined> {
  decompressor ??= raw().then((r) => {
    if (!r) return undefined;
    try {
      const d = decompressorOver(r);
      // A known frame (16 zero bytes at level 1) must come back; fails here.
      const frame = compressorOver(r).compress(new Uint8Array(16), 1);
      if (d.decompress(frame, 16).some((b) => b !== 0)) return undefined;
      return d;
    } catch {
      return undefined;
    }
  });
  return decompressor;
}
