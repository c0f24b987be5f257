/**
 * The two directions of a `node:net` socket for the worker protocol, with
 * backpressure both ways: a direct byte source that pauses the socket while
 * more than a high-water mark is queued, and a direct byte sink that waits
 * for `drain` when the socket's buffer is full.
 *
 * Both are plain objects rather than web streams: a QueryPathInfo round
 * trip is a few dozen microseconds, and a ReadableStream/WritableStream
 * adds promise hops and queue bookkeeping to each message (measured: a
 * WritableStream costs ~0.1 ms per small reply under Deno).
 *
 * @module
 */
import type { Socket } from "node:net";

import type { ByteSource } from "../wire/reader.ts";
import type { ByteSink } from "../wire/writer.ts";
import { dupSocketFd } from "../runtime/raw_socket.ts";

/** The two directions of a socket. */
export interface SocketStreams {
  /** What the peer sends; ends when the peer closes its side. */
  readable: ByteSource;
  /** What we send. */
  writable: ByteSink;
}

type ReadResult = ReadableStreamReadResult<Uint8Array>;

/**
 * Chunks of a socket, queued until read. One reader at a time (a
 * WireReader); chunks go straight to a waiting read.
 */
class SocketSource implements ByteSource {
  #queue: Uint8Array[] = [];
  #head = 0;
  #queued = 0;
  #paused = false;
  #ended = false;
  #error: unknown;
  #waiter?: { resolve: (r: ReadResult) => void; reject: (e: unknown) => void };

  constructor(readonly socket: Socket, readonly highWaterMark: number) {
    socket.on("data", (b: Uint8Array) => {
      if (this.#ended) return;
      const chunk = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      const w = this.#waiter;
      if (w) {
        this.#waiter = undefined;
        w.resolve({ value: chunk, done: false });
        return;
      }
      this.#queue.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued >= highWaterMark && !this.#paused) {
        this.#paused = true;
        socket.pause();
      }
    });
    const end = () => this.#finish(undefined);
    socket.on("end", end);
    socket.on("close", end);
    socket.on("error", (e) => this.#finish(e ?? new Error("socket error")));
  }

  #finish(error: unknown) {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    const w = this.#waiter;
    if (!w) return;
    this.#waiter = undefined;
    if (error !== undefined && this.#head >= this.#queue.length) {
      w.reject(error);
    } else w.resolve({ value: undefined, done: true });
  }

  read(): Promise<ReadResult> {
    if (this.#head < this.#queue.length) {
      const value = this.#queue[this.#head];
      this.#queue[this.#head++] = EMPTY;
      if (this.#head === this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
      }
      this.#queued -= value.length;
      if (this.#paused && this.#queued < this.highWaterMark) {
        this.#paused = false;
        this.socket.resume();
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#ended) {
      return this.#error !== undefined
        ? Promise.reject(this.#error)
        : Promise.resolve({ value: undefined, done: true });
    }
    if (this.#waiter) {
      return Promise.reject(new Error("socket read while another is pending"));
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  cancel(): Promise<void> {
    this.#queue = [];
    this.#head = 0;
    this.#queued = 0;
    this.#finish(undefined);
    this.socket.destroy();
    return Promise.resolve();
  }
}

const EMPTY = new Uint8Array(0);

/** Wraps `socket`; at most about `highWaterMark` unread bytes are queued. */
export function socketStreams(
  socket: Socket,
  highWaterMark = 1 << 20,
): SocketStreams {
  const readable = new SocketSource(socket, highWaterMark);

  /** Waits for room in the socket's buffer. */
  const drained = () =>
    new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        socket.off("close", onClose);
        resolve();
      };
      const onClose = () => {
        socket.off("drain", onDrain);
        reject(new Error("connection closed"));
      };
      socket.once("drain", onDrain);
      socket.once("close", onClose);
    });

  const writable: ByteSink = {
    write(chunk) {
      if (socket.destroyed) {
        return Promise.reject(new Error("connection closed"));
      }
      if (socket.write(chunk)) return;
      return drained();
    },
    writeThen(chunk, release) {
      if (socket.destroyed) {
        return Promise.reject(new Error("connection closed"));
      }
      // node calls back once the chunk is written (or the write failed):
      // either way the socket is done with it.
      if (socket.write(chunk, () => release())) return;
      return drained();
    },
    async directFd() {
      // Once node:net has written everything it was given (a direct write
      // must not overtake it), a duplicate of the socket's descriptor.
      while (socket.writableLength > 0 && !socket.destroyed) {
        await new Promise((r) => setTimeout(r, 1));
      }
      return await dupSocketFd(socket);
    },
    close() {
      return new Promise<void>((resolve) => socket.end(resolve));
    },
    abort() {
      socket.destroy();
    },
  };
  return { readable, writable };
}
