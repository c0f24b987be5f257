/**
 * Helpers for the codec's tests: streams from bytes (cut at given points) and
 * a writer that collects what it is given.
 *
 * @module
 */
import { WireReader } from "./reader.ts";
import { WireWriter } from "./writer.ts";

/** A stream of `bytes`, cut into chunks of the given sizes (cycled). */
export function streamOf(
  bytes: Uint8Array,
  cuts: number[] = [bytes.length || 1],
): ReadableStream<Uint8Array> {
  let pos = 0, i = 0;
  return new ReadableStream({
    pull(ctl) {
      if (pos >= bytes.length) return ctl.close();
      const n = Math.max(1, cuts[i++ % cuts.length]);
      ctl.enqueue(bytes.slice(pos, pos + n));
      pos += n;
    },
  });
}

/** A reader over `bytes`, cut into chunks. */
export function readerOf(bytes: Uint8Array, cuts?: number[]): WireReader {
  return new WireReader(streamOf(bytes, cuts));
}

/** A writer and a function that returns everything it wrote (after flush). */
export function collectingWriter(
  bufferSize?: number,
): { w: WireWriter; bytes: () => Uint8Array } {
  const chunks: Uint8Array[] = [];
  const w = new WireWriter(
    new WritableStream({ write: (c) => void chunks.push(c.slice()) }),
    bufferSize,
  );
  return {
    w,
    bytes() {
      const n = chunks.reduce((a, c) => a + c.length, 0);
      const out = new Uint8Array(n);
      let o = 0;
      for (const c of chunks) {
        out.set(c, o);
        o += c.length;
      }
      return out;
    },
  };
}

/** Writes with `fn`, flushes, returns the bytes. */
export async function encode(
  fn: (w: WireWriter) => unknown,
): Promise<Uint8Array> {
  const { w, bytes } = collectingWriter();
  await fn(w);
  await w.flush();
  return bytes();
}

/** Reads all of a stream into one array. */
export async function drainStream(
  s: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of s) parts.push(c.slice());
  const out = new Uint8Array(parts.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of parts) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}
