/**
 * Checks a {@linkcode ByteRange} against a blob size.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ByteRange } from "./blob_service.ts";

/**
 * Turns an optional range into `[start, end)` within a blob of `size` bytes.
 * Offsets past the end give an empty range (as a read past EOF does); a
 * negative or non-integer offset or length is `InvalidArgument`.
 */
export function checkRange(
  range: ByteRange | undefined,
  size: number,
): [number, number] {
  if (!range) return [0, size];
  const { offset, length } = range;
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new ConnectError(
      `invalid read offset ${offset}`,
      Code.InvalidArgument,
    );
  }
  if (length !== undefined && (!Number.isSafeInteger(length) || length < 0)) {
    throw new ConnectError(
      `invalid read length ${length}`,
      Code.InvalidArgument,
    );
  }
  const start = Math.min(offset, size);
  const end = length === undefined ? size : Math.min(size, start + length);
  return [start, end];
}
