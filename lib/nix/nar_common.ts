/**
 * What the NAR reader and writer share: the error type, the format's bounds
 * and the rules for entry names and symlink targets.
 *
 * @module
 */

/** The first string of every NAR. */
export const NAR_MAGIC = "nix-archive-1";

/** Longest entry name (bytes); matches Nix's bound and Linux NAME_MAX. */
export const MAX_NAME_LENGTH = 255;

/** Longest symlink target (bytes); matches Nix's bound and Linux PATH_MAX - 1. */
export const MAX_TARGET_LENGTH = 4095;

/**
 * Deepest directory nesting we read or write. Nix 2.8 has no bound, newer Nix
 * stops at 64; a path of 4095 bytes cannot hold more than 2048 levels.
 */
export const MAX_NAR_DEPTH = 2048;

/** A malformed NAR, or a tree that cannot be written as one. */
export class NarError extends Error {
  /** Byte offset in the NAR where the problem was found, if reading. */
  readonly offset: number | undefined;
  /** The message without the `bad NAR at byte N: ` prefix. */
  readonly reason: string;

  /** `offset` (when given) is prefixed to the message. */
  constructor(message: string, offset?: number) {
    super(
      offset === undefined ? message : `bad NAR at byte ${offset}: ${message}`,
    );
    this.name = "NarError";
    this.offset = offset;
    this.reason = message;
  }
}

/** Compares two byte strings as unsigned bytes (like memcmp, then length). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i] - b[i];
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/**
 * Throws a {@link NarError} unless `name` is a valid entry name: 1..255 bytes,
 * not `.` or `..`, without `/` or NUL.
 */
export function validateEntryName(
  name: Uint8Array,
  where: () => string,
  offset?: number,
): void {
  const n = name.length;
  let bad = n === 0 || n > MAX_NAME_LENGTH ||
    (name[0] === 0x2e && (n === 1 || (n === 2 && name[1] === 0x2e)));
  if (!bad) {
    for (let i = 0; i < n; i++) {
      const c = name[i];
      if (c === 0x2f || c === 0) {
        bad = true;
        break;
      }
    }
  }
  if (bad) {
    throw new NarError(
      `invalid entry name ${showBytes(name)} in directory ${where()}` +
        " (must be 1..255 bytes, not . or .., without / or NUL)",
      offset,
    );
  }
}

/** Throws a {@link NarError} unless `target` has 1..4095 bytes and no NUL. */
export function validateSymlinkTarget(
  target: Uint8Array,
  where: () => string,
  offset?: number,
): void {
  if (
    target.length === 0 || target.length > MAX_TARGET_LENGTH ||
    target.includes(0)
  ) {
    throw new NarError(
      `invalid symlink target ${
        showBytes(target.subarray(0, 64))
      } at ${where()}` +
        " (must be 1..4095 bytes without NUL)",
      offset,
    );
  }
}

const dec = new TextDecoder();

/** Renders bytes for an error message (JSON-quoted, lossy UTF-8). */
export function showBytes(b: Uint8Array): string {
  return JSON.stringify(dec.decode(b));
}

/** Renders a path of name components as `/a/b` for messages. */
export function showPath(path: readonly Uint8Array[]): string {
  return JSON.stringify("/" + path.map((p) => dec.decode(p)).join("/"));
}
