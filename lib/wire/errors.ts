/**
 * Errors of the wire codec.
 *
 * @module
 */

/** Malformed or out-of-bounds input on the wire. The message is one line. */
export class WireError extends Error {
  /** Creates an error; `offset` is the stream position where it was found. */
  constructor(message: string, readonly offset?: number) {
    super(offset === undefined ? message : `${message} (at byte ${offset})`);
    this.name = "WireError";
  }
}

/** The peer closed the stream before a value was complete. */
export class UnexpectedEofError extends WireError {
  /** Creates an error for an early end of stream. */
  constructor(what: string, offset?: number) {
    super(`unexpected end of stream while reading ${what}`, offset);
    this.name = "UnexpectedEofError";
  }
}

/** Default bounds for values read from the wire. */
export const Limits = {
  /** Ordinary strings (settings, messages, hash strings): 64 KiB. */
  string: 64 << 10,
  /** Store paths: 4 KiB. */
  path: 4 << 10,
  /** Items in a list, set or map: 1 Mi. */
  count: 1 << 20,
  /** A text file sent inline (AddTextToStore): 64 MiB. */
  text: 64 << 20,
  /** One frame of a framed stream: 64 MiB. */
  frame: 64 << 20,
} as const;

/**
 * A value that arrived intact but means nothing valid (a bad content-address
 * string, a bad output list). Unlike {@linkcode WireError}, the stream is
 * still in step after it.
 */
export class InvalidValueError extends Error {
  /** Creates the error with a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "InvalidValueError";
  }
}
