/**
 * Stream helpers shared by the NAR tests (not part of the library).
 *
 * @module
 */
import { concatBytes } from "./bytes.ts";

/** Every byte of `s`, concatenated. */
export async function collect(
  s: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of s) parts.push(c.slice());
  return concatBytes(parts);
}

/** A stream of `data` cut into pieces of `piece` bytes (tests chunk boundaries). */
export function streamOf(
  data: Uint8Array,
  piece = 7,
): ReadableStream<Uint8Array> {
  let o = 0;
  return new ReadableStream({
    pull(c) {
      if (o >= data.length) return c.close();
      c.enqueue(data.slice(o, o + piece));
      o += piece;
    },
  });
}
