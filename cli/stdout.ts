/**
 * Writing command output to stdout: blocking writes on fd 1 (a full pipe
 * makes us wait, as `nix-store --dump` does), and a quiet exit with status 0
 * when the reader goes away (EPIPE, e.g. `snix store export P | head`).
 *
 * @module
 */
import * as fs from "node:fs";
import { Buffer } from "node:buffer";
import process from "node:process";

/**
 * Writes to fd 1 synchronously (blocking on a full pipe); retries when stdout
 * is non-blocking; on EPIPE exits quietly with status 0, as `nix-store --dump | head`.
 */
export class StdoutWriter {
  #parts: Uint8Array[] = [];
  /** Bytes buffered by {@link buffer} and not yet written. */
  pending = 0;

  /** Buffers a small piece; written on {@link flush} or the next {@link write}. */
  buffer(b: Uint8Array): void {
    this.#parts.push(b);
    this.pending += b.length;
  }

  /** Writes buffered pieces. */
  async flush(): Promise<void> {
    if (this.pending === 0) return;
    const all = concatBytes(this.#parts);
    this.#parts = [];
    this.pending = 0;
    await this.#writeAll(all);
  }

  /** Writes `b` (after anything buffered) completely before resolving. */
  async write(b: Uint8Array): Promise<void> {
    if (this.pending > 0) await this.flush();
    await this.#writeAll(b);
  }

  async #writeAll(b: Uint8Array): Promise<void> {
    let o = 0;
    while (o < b.length) {
      try {
        o += fs.writeSync(1, b, o, b.length - o);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EAGAIN") {
          await new Promise((r) => setTimeout(r, 1));
          continue;
        }
        if (code === "EPIPE" || (e as Error).name === "BrokenPipe") {
          process.exit(0);
        }
        throw e;
      }
    }
  }
}

/** Copies a byte stream to stdout (see {@linkcode StdoutWriter}). */
export async function pipeToStdout(
  stream: ReadableStream<Uint8Array>,
): Promise<void> {
  const out = new StdoutWriter();
  const reader = stream.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      await out.write(value);
    }
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw e;
  }
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}
