/**
 * Framed streams, as `AddToStoreNar` (1.23+), `AddToStore` (1.25+),
 * `AddMultipleToStore` and `AddBuildLog` use them: a sequence of frames, each
 * a u64 length and that many bytes (no padding), ended by a frame of length 0.
 *
 * @module
 */
import { WireError } from "./errors.ts";
import type { ByteSource, WireReader } from "./reader.ts";
import type { WireWriter } from "./writer.ts";

/**
 * The data of a framed stream being read: as a web stream, or read directly
 * (it is a {@linkcode ByteSource}, e.g. for a nested {@linkcode WireReader}).
 * Use one of the two, not both.
 */
export interface FramedSource extends ByteSource {
  /** The bytes of all frames, in order; ends at the empty frame. */
  readonly stream: ReadableStream<Uint8Array>;
  /**
   * Skips whatever the stream has not delivered yet, up to and including the
   * empty frame, so the connection is at the next value again. Safe to call
   * after the stream ended or was cancelled.
   */
  drain(): Promise<void>;
  /** Whether the end frame has been read. */
  readonly done: boolean;
}

/**
 * Frame data is handed out in pieces of up to this many bytes. Nix sends
 * frames of 32 KiB at most, and a socket read brings 64 KiB at most: one
 * piece per frame made every consumer (stream hops, the NAR reader, the NAR
 * hash, the blob writers) pay its per-piece costs some 32 thousand times per
 * GiB; gathered pieces cost one copy, which consumers downstream then need
 * not make (the NAR ingestion gathers pieces under 64 KiB itself).
 */
const GATHER = 256 << 10;
/** A gathered piece goes out early, rather than waiting for the client, once it is this big. */
const GATHER_MIN = 64 << 10;
/** Pieces are gathered into slabs of this size. */
const SLAB = 512 << 10;
const EMPTY = new Uint8Array(0);

/**
 * Reads a framed stream from `reader`; frames longer than `maxFrame` are an
 * error. The reader is claimed until the end frame has been read (by
 * consuming the stream or by `drain()`).
 */
export function framedSource(
  reader: WireReader,
  maxFrame: number,
): FramedSource {
  reader.claim();
  let left = 0; // bytes left in the current frame
  let done = false;
  let failed: unknown;
  let inflight: Promise<unknown> | undefined;

  /** The next frame length, or undefined (no bytes consumed) if it is not buffered. */
  const lengthSync = () =>
    reader.borrowSync(() => reader.readNumberSync(maxFrame));
  const length = () =>
    reader.borrow(() => reader.readNumber("frame length", maxFrame));
  const some = (max: number) =>
    reader.borrowSync(() => reader.readSomeSync(max)) ??
      reader.borrow(() => reader.readSome(max));

  const endFrame = () => {
    done = true;
    reader.release();
  };

  // Pieces are gathered into the free end of a slab: handed-out views never
  // overlap, and a piece handed out early (the client is slower than us)
  // does not cost a whole new buffer.
  let slab = EMPTY;
  let slabUsed = 0;

  /** The next piece of frame data (gathered up to GATHER bytes), or undefined at the end. */
  const next = async (): Promise<Uint8Array | undefined> => {
    let out: Uint8Array | undefined;
    let got = 0;
    let room = GATHER;
    while (got < room) {
      if (left === 0) {
        if (done) break;
        let n = lengthSync();
        if (n === undefined) {
          // Not buffered: hand out what we have if it is big enough.
          if (got >= GATHER_MIN) break;
          n = await length();
        }
        if (n === 0) {
          endFrame();
          break;
        }
        left = n;
        continue;
      }
      if (got >= GATHER_MIN && reader.buffered === 0) break;
      const p = some(Math.min(left, room - got));
      const chunk = p instanceof Uint8Array ? p : await p;
      if (chunk === undefined) {
        throw new WireError(
          "unexpected end of stream inside a frame",
          reader.offset,
        );
      }
      left -= chunk.length;
      if (out === undefined) {
        if (chunk.length >= GATHER_MIN) return chunk; // big already: no copy
        if (slab.length - slabUsed < GATHER_MIN) {
          // The first slab is small: most framed streams are small.
          slab = new Uint8Array(slab === EMPTY ? GATHER_MIN : SLAB);
          slabUsed = 0;
        }
        room = Math.min(GATHER, slab.length - slabUsed);
        out = slab.subarray(slabUsed, slabUsed + room);
      }
      out.set(chunk, got);
      got += chunk.length;
    }
    if (out === undefined) return undefined;
    slabUsed += got;
    return out.subarray(0, got);
  };

  const read = async (): Promise<ReadableStreamReadResult<Uint8Array>> => {
    if (failed) throw failed;
    const p = next();
    inflight = p;
    try {
      const value = await p;
      return value === undefined
        ? { done: true, value: undefined }
        : { done: false, value };
    } catch (e) {
      failed = e;
      reader.release();
      throw e;
    } finally {
      inflight = undefined;
    }
  };

  const stream = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        const r = await read();
        if (r.done) ctl.close();
        else ctl.enqueue(r.value);
      } catch (e) {
        ctl.error(e);
      }
    },
  }, { highWaterMark: 0 });

  return {
    stream,
    read,
    cancel: async () => {
      // Like drain(): the connection must stay in step.
      await drain();
    },
    get done() {
      return done;
    },
    drain,
  };

  async function drain() {
    if (inflight) await inflight.catch(() => {});
    if (failed) throw failed;
    try {
      while (!done) {
        if (left > 0) {
          const n = left;
          left = 0;
          await reader.borrow(() => reader.skip(n, "frame"));
        }
        const n = lengthSync() ?? await length();
        if (n === 0) endFrame();
        else left = n;
      }
    } catch (e) {
      failed = e;
      reader.release();
      throw e;
    }
  }
}

/**
 * Writes a framed stream: `write` sends one frame per call (empty writes are
 * skipped, since an empty frame ends the stream); `close` sends the end frame.
 */
export class FramedSink {
  /** Frames go to `writer`. */
  constructor(readonly writer: WireWriter, readonly maxFrame = 64 << 10) {}

  /** Sends `data` as one or more frames. */
  async write(data: Uint8Array): Promise<void> {
    for (let i = 0; i < data.length; i += this.maxFrame) {
      const part = data.subarray(i, Math.min(data.length, i + this.maxFrame));
      this.writer.u64(part.length);
      await this.writer.write(part);
    }
  }

  /** Sends the end frame and flushes. */
  async close(): Promise<void> {
    this.writer.u64(0);
    await this.writer.flush();
  }

  /** A WritableStream view: each chunk becomes frames; closing ends the stream. */
  writable(): WritableStream<Uint8Array> {
    return new WritableStream({
      write: (c) => this.write(c),
      close: () => this.close(),
    });
  }
}
