/**
 * Synchronous file-descriptor helpers of the local store: positional reads
 * and whole writes (the loops `fs.readSync`/`fs.writeSync` need because a
 * call may move fewer bytes than asked), and a directory's fsync.
 *
 * @module
 */
import * as fs from "node:fs";

/** `len` bytes of `fd` from position `at`; throws at the end of the file. */
export function preadExact(fd: number, at: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  preadAtLeast(fd, b, len, at);
  return b;
}

/**
 * Reads from `at` into `buf` until at least `want` bytes are in (up to its
 * length: more if the file has them); how many. Throws at the end of file.
 */
export function preadAtLeast(
  fd: number,
  buf: Uint8Array,
  want: number,
  at: number,
): number {
  let n = 0;
  while (n < want) {
    const got = fs.readSync(fd, buf, n, buf.length - n, at + n);
    if (got === 0) throw new Error("unexpected end of file");
    n += got;
  }
  return n;
}

/** Writes all of `b` to `fd` at its current position. */
export function writeAll(fd: number, b: Uint8Array): void {
  let n = 0;
  while (n < b.length) n += fs.writeSync(fd, b, n, b.length - n);
}

/** fsync(2) of a directory (after renaming files into it). */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
