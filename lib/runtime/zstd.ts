/**
 * zstd compression through the system's libzstd (`libzstd.so.1`) via FFI,
 * with ONE compression context reused for every call.
 *
 * Why: `node:zlib`'s `zstdCompressSync` builds a new compressor (context,
 * handle, buffers) per call. For castore's ~9,000 chunks per GiB that set-up
 * measured ~0.45 s of the 1 GiB import's main-thread time, and the whole
 * call ~1.7x the FFI one (1,450 corpus chunks: ~140 ms vs ~80 ms, Deno 2.9).
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
  };
}

function loadDeno(): RawZstd {
  const D = (globalThis as Any).Deno;
  const lib = D.dlopen("libzstd.so.1", {
    ZSTD_createCCtx: { parameters: [], result: "pointer" },
    ZSTD_compressCCtx: {
      parameters: ["pointer", "buffer", "usize", "buffer", "usize", "i32"],
      result: "usize",
    },
    ZSTD_compressBound: { parameters: ["usize"], result: "usize" },
    ZSTD_isError: { parameters: ["usize"], result: "u32" },
    ZSTD_getErrorName: { parameters: ["usize"], result: "pointer" },
  });
  const s = lib.symbols;
  const cctx = s.ZSTD_createCCtx();
  if (cctx === null) throw new Error("ZSTD_createCCtx failed");
  return {
    cctx,
    compressCCtx: (c, dst, cap, src, n, level) =>
      Number(s.ZSTD_compressCCtx(c, dst, BigInt(cap), src, BigInt(n), level)),
    compressBound: (n) => Number(s.ZSTD_compressBound(BigInt(n))),
    isError: (code) => s.ZSTD_isError(BigInt(code)) !== 0,
    errorName: (code) => {
      const p = s.ZSTD_getErrorName(BigInt(code));
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
  });
  const s = lib.symbols;
  const cctx = s.ZSTD_createCCtx();
  if (!cctx) throw new Error("ZSTD_createCCtx failed");
  return {
    cctx,
    compressCCtx: (c, dst, cap, src, n, level) =>
      Number(s.ZSTD_compressCCtx(c, dst, cap, src, n, level)),
    compressBound: (n) => Number(s.ZSTD_compressBound(n)),
    isError: (code) => s.ZSTD_isError(code) !== 0,
    errorName: (code) => {
      const p = s.ZSTD_getErrorName(code);
      return p ? String(new CString(p)) : `error ${code}`;
    },
  };
}

let loading: Promise<ZstdCompressor | undefined> | undefined;

/**
 * The libzstd compressor, or `undefined` where it cannot be loaded (no FFI
 * permission, no libzstd.so.1, a runtime without FFI). Loaded once.
 */
export function zstdCompressor(): Promise<ZstdCompressor | undefined> {
  loading ??= (async () => {
    const g = globalThis as Any;
    try {
      const raw = g.Bun !== undefined
        ? await loadBun()
        : g.Deno !== undefined
        ? loadDeno()
        : undefined;
      if (!raw) return undefined;
      const c = compressorOver(raw);
      c.compress(new Uint8Array(16), 1); // fails here, not mid-import
      return c;
    } catch {
      return undefined;
    }
  })();
  return loading;
}
