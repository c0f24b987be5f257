/**
 * Framed streams, as `AddToStoreNar` (1.23+), `AddToStore` (1.25+),
 * `AddMultipleToStore` and `AddBuildLog` use them: a sequence of frames, each
 * a u64 length and that many bytes (no padding), ended by a frame of length 0.
 *
 * @module
 */
import { WireError } from "./errors.ts";
import type { WireReader } from "./reader.ts";
import type { WireWriter } from "./writer.ts";

/** The data of a framed stream being read. */
export interface FramedSource {
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

  const next = async (): Promise<Uint8Array | undefined> => {
    while (left === 0) {
      const n = await reader.borrow(() =>
        reader.readNumber("frame length", maxFrame)
      );
      if (n === 0) {
        done = true;
        reader.release();
        return undefined;
      }
      left = n;
    }
    const chunk = await reader.borrow(() => reader.readSome(left));
    if (chunk === undefined) {
      throw new WireError(
        "unexpected end of stream inside a frame",
        reader.offset,
      );
    }
    left -= chunk.length;
    return chunk;
  };

  const stream = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        const c = await next();
        if (c === undefined) ctl.close();
        else ctl.enqueue(c);
      } catch (e) {
        failed = e;
        reader.release();
        ctl.error(e);
      }
    },
  }, { highWaterMark: 0 });

  return {
    stream,
    get done() {
      return done;
    },
    async drain() {
      if (failed) throw failed;
      while (!done) {
        if (left > 0) {
          const n = left;
          left = 0;
          await reader.borrow(() => reader.skip(n, "frame"));
        }
        await next();
      }
    },
  };
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
