/**
 * Writing command output to stdout: blocking writes on fd 1 (a full pipe
 * makes us wait, as `nix-store --dump` does), and a quiet exit with status 0
 * when the reader goes away (EPIPE, e.g. `snix store export P | head`).
 *
 * @module
 */
import * as fs from "node:fs";
import process from "node:process";
import {
  ffiAvailable,
  type LibC,
  libc,
  O_CLOEXEC,
  O_RDONLY,
  OsError,
  POLLOUT,
} from "../lib/runtime/libc.ts";
import { concatBytes } from "../lib/nix/bytes.ts";

const EINTR = 4, EAGAIN = 11, EINVAL = 22, EPIPE = 32, ENOSYS = 38;
/** Largest count one sendfile(2) call transfers on Linux. */
const SENDFILE_MAX = 0x7ffff000;

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

  /**
   * Copies up to `size` bytes of the file at `path` to stdout with
   * sendfile(2) (kernel to kernel, no copies through our memory), after
   * anything buffered. Returns how many bytes were copied: fewer than `size`
   * when the file is shorter, 0 when sendfile is not possible here (no FFI,
   * the file cannot be opened, or the kernel refuses this pair of files);
   * the caller then writes the rest itself and reports any problem.
   */
  async sendFile(path: Uint8Array, size: number): Promise<number> {
    const lc = await this.#libc();
    if (!lc) return 0;
    if (this.pending > 0) await this.flush();
    let fd: number;
    try {
      fd = lc.open(path, O_RDONLY | O_CLOEXEC);
    } catch {
      return 0;
    }
    let done = 0;
    try {
      while (done < size) {
        const n = lc.sendfile(1, fd, Math.min(size - done, SENDFILE_MAX));
        if (n > 0) done += n;
        else if (n === 0) break; // end of file: shorter than expected
        else if (n === -EINTR) continue;
        else if (n === -EAGAIN) lc.poll(1, POLLOUT, -1); // non-blocking stdout
        else if (n === -EPIPE) process.exit(0);
        else if (done === 0 && (n === -EINVAL || n === -ENOSYS)) {
          this.#noSendfile = true;
          break;
        } else throw new OsError("sendfile", -n);
      }
    } finally {
      lc.close(fd);
    }
    return done;
  }

  #noSendfile = false;
  #lc: LibC | undefined;

  async #libc(): Promise<LibC | undefined> {
    if (this.#noSendfile) return undefined;
    if (this.#lc) return this.#lc;
    try {
      if (!ffiAvailable()) throw new Error("no FFI");
      this.#lc = await libc();
      return this.#lc;
    } catch {
      // e.g. `deno run` without --allow-ffi: plain writes instead.
      this.#noSendfile = true;
      return undefined;
    }
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
