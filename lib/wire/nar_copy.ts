/**
 * Copies exactly one NAR off the connection, for the old operations that send
 * a NAR inline without a length (AddToStoreNar before 1.21, AddToStore before
 * 1.25). It follows only the NAR's token structure to find its end (string
 * lengths, parentheses, which strings are data); the full, strict check is the
 * NAR reader's job downstream.
 *
 * @module
 */
import { WireError } from "./errors.ts";
import type { WireReader } from "./reader.ts";

const decoder = new TextDecoder();
const MAX_TOKEN = 64 << 10;

/**
 * A stream of the raw bytes of the NAR at the reader's position; the reader is
 * claimed until the NAR's last byte has been delivered. `maxFile` bounds one
 * file's size.
 */
export function narCopy(
  reader: WireReader,
  maxFile = Number.MAX_SAFE_INTEGER,
): ReadableStream<Uint8Array> {
  reader.claim();
  const gen = (async function* () {
    const lenBytes = async (max: number, what: string) => {
      const b = (await reader.borrow(() => reader.readExact(8, what))).slice();
      const v = new DataView(b.buffer);
      const hi = v.getUint32(4, true), lo = v.getUint32(0, true);
      const n = hi * 2 ** 32 + lo;
      if (hi >= 0x200000 || n > max) {
        throw new WireError(
          `NAR ${what} length ${n} is too large`,
          reader.offset,
        );
      }
      return { b, n };
    };
    const pad = (n: number) => (8 - (n % 8)) % 8;
    let depth = 0;
    let prev = "";
    let first = true;
    for (;;) {
      const dataString = prev === "contents";
      const { b, n } = await lenBytes(
        dataString ? maxFile : MAX_TOKEN,
        dataString ? "file" : "token",
      );
      yield b;
      if (dataString) {
        let left = n + pad(n);
        while (left > 0) {
          const c = await reader.borrow(() => reader.readSome(left));
          if (!c) {
            throw new WireError(
              "unexpected end of stream inside a NAR",
              reader.offset,
            );
          }
          left -= c.length;
          yield c.slice();
        }
        prev = "";
        continue;
      }
      const body = (await reader.borrow(() =>
        reader.readExact(n + pad(n), "NAR token")
      )).slice();
      yield body;
      const tok = decoder.decode(body.subarray(0, n));
      if (first) {
        if (tok !== "nix-archive-1") {
          throw new WireError("not a NAR (bad magic)", reader.offset);
        }
        first = false;
        prev = "";
        continue;
      }
      if (prev === "name" || prev === "target") {
        prev = "";
        continue;
      }
      if (tok === "(") depth++;
      else if (tok === ")") {
        depth--;
        if (depth === 0) return;
        if (depth < 0) throw new WireError("unbalanced NAR", reader.offset);
      }
      prev = tok;
    }
  })();
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        const { value, done } = await gen.next();
        if (done) {
          reader.release();
          ctl.close();
        } else ctl.enqueue(value);
      } catch (e) {
        reader.release();
        ctl.error(e);
      }
    },
    async cancel() {
      await gen.return(undefined);
      reader.release();
    },
  }, { highWaterMark: 0 });
}
