/**
 * The {@linkcode LibC} binding for Bun: `bun:ffi` on libc.so.6. Bun has no
 * FFI calls that run off the main thread, so the calls that wait (`syncfs`,
 * `pollAsync`) each run in a long-lived worker, and each
 * {@linkcode DeviceReader} is a `Worker` doing plain blocking `read`s and
 * posting each message back. `readNow` on a non-blocking fd plus
 * `pollAsync` let the FUSE session read requests on the main thread, with a
 * cross-thread message only when it has to wait for the next request.
 *
 * @module
 */
import {
  type DeviceReader,
  iovecs,
  type LibC,
  OsError,
  pathCalls,
  POLLERR,
} from "./libc.ts";

// `bun:ffi` only exists under Bun; a computed specifier keeps Deno's type
// checker from looking for it.
// deno-lint-ignore no-explicit-any
type Any = any;

/** Opens libc with Bun's FFI. */
export async function openBunLibC(): Promise<LibC> {
  const ffi: Any = await import(["bun", "ffi"].join(":"));
  const { dlopen, FFIType, read: peek, ptr } = ffi;
  // read(2) and write(2): (fd, buffer, count) -> ssize_t
  const fdBufferCall = {
    args: [FFIType.i32, FFIType.ptr, FFIType.u64],
    returns: FFIType.i64,
  };
  const lib = dlopen("libc.so.6", {
    open: {
      args: [FFIType.ptr, FFIType.i32, FFIType.u32],
      returns: FFIType.i32,
    },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
    mount: {
      args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr],
      returns: FFIType.i32,
    },
    umount2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    write: fdBufferCall,
    writev: {
      args: [FFIType.i32, FFIType.ptr, FFIType.i32],
      returns: FFIType.i64,
    },
    sendfile: {
      args: [FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.u64],
      returns: FFIType.i64,
    },
    poll: {
      args: [FFIType.ptr, FFIType.u64, FFIType.i32],
      returns: FFIType.i32,
    },
    read: fdBufferCall,
    // fcntl(fd, cmd, int arg): the variadic int passes like a fixed one on
    // the x86-64 and aarch64 Linux ABIs.
    fcntl: {
      args: [FFIType.i32, FFIType.i32, FFIType.i32],
      returns: FFIType.i32,
    },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
  const s = lib.symbols;
  const errno = (): number => peek.i32(s.__errno_location(), 0);
  const pollBuf = new Uint8Array(8);
  const pollView = new DataView(pollBuf.buffer);
  return {
    runtime: "bun",
    ...pathCalls(s, errno),
    write(fd, data) {
      if (data.byteLength === 0) return 0;
      const n = Number(s.write(fd, data, BigInt(data.byteLength)));
      return n < 0 ? -errno() : n;
    },
    writev(fd, parts) {
      const [iov, n] = iovecs(parts, (p) => BigInt(ptr(p)));
      if (n === 0) return 0;
      const r = Number(s.writev(fd, iov, n));
      return r < 0 ? -errno() : r;
    },
    sendfile(outFd, inFd, count) {
      const n = Number(s.sendfile(outFd, inFd, null, BigInt(count)));
      return n < 0 ? -errno() : n;
    },
    poll(fd, events, timeoutMs) {
      pollView.setInt32(0, fd, true);
      pollView.setInt16(4, events, true);
      pollView.setInt16(6, 0, true);
      const r = s.poll(pollBuf, 1n, timeoutMs);
      return r < 0 ? POLLERR : pollView.getUint16(6, true);
    },
    async syncfs(fd) {
      syncfsCalls ??= new BlockingCallWorker(SYNCFS_WORKER_SOURCE);
      const errno = await syncfsCalls.call([fd]);
      if (errno !== 0) throw new OsError("syncfs", errno);
    },
    readNow(fd, buffer) {
      const n = Number(s.read(fd, buffer, BigInt(buffer.byteLength)));
      return n < 0 ? -errno() : n;
    },
    pollAsync(fd, events, timeoutMs) {
      pollCalls ??= new BlockingCallWorker(POLL_WORKER_SOURCE);
      return pollCalls.call([fd, events, timeoutMs]);
    },
    setNonBlocking(fd) {
      const flags = s.fcntl(fd, F_GETFL, 0);
      return flags >= 0 && s.fcntl(fd, F_SETFL, flags | O_NONBLOCK) >= 0;
    },
    reader(fd, bufferSize): DeviceReader {
      // The worker's source travels as a Blob URL: a worker file next to this
      // module would not be found inside a `bun build --compile` binary.
      const url = URL.createObjectURL(
        new Blob([READ_WORKER_SOURCE], { type: "text/javascript" }),
      );
      const worker = new Worker(url, { type: "module" } as WorkerOptions);
      const queue: (Uint8Array | null)[] = [];
      const waiting: ((m: Uint8Array | null) => void)[] = [];
      let ended = false;
      const deliver = (m: Uint8Array | null) => {
        if (m === null) ended = true;
        const w = waiting.shift();
        if (w) w(m);
        else queue.push(m);
      };
      worker.onmessage = (e: MessageEvent) =>
        deliver(e.data as Uint8Array | null);
      worker.onerror = () => deliver(null);
      worker.postMessage({ fd, bufferSize });
      return {
        read() {
          if (queue.length > 0) return Promise.resolve(queue.shift()!);
          if (ended) return Promise.resolve(null);
          return new Promise((resolve) => waiting.push(resolve));
        },
        close() {
          ended = true;
          worker.terminate();
          URL.revokeObjectURL(url);
          for (const w of waiting.splice(0)) w(null);
        },
      };
    },
  };
}

/**
 * The worker behind `LibC.reader`: blocking `read`s of one fd, each message
 * posted to the parent (transferred), `null` once the device is gone. EINTR,
 * EAGAIN and ENOENT (a request interrupted before we read it) are retried.
 */
const READ_WORKER_SOURCE = `
import { dlopen, FFIType, read as peek } from "bun:ffi";
self.onmessage = (e) => {
  const { fd, bufferSize } = e.data;
  const lib = dlopen("libc.so.6", {
    read: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
  const buf = new Uint8Array(bufferSize);
  for (;;) {
    const n = Number(lib.symbols.read(fd, buf, BigInt(bufferSize)));
    if (n > 0) {
      const msg = buf.slice(0, n);
      self.postMessage(msg, [msg.buffer]);
      continue;
    }
    const errno = n < 0 ? peek.i32(lib.symbols.__errno_location(), 0) : 0;
    if (n < 0 && (errno === 4 || errno === 11 || errno === 2)) continue;
    self.postMessage(null);
    break;
  }
};
`;

const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/**
 * The worker behind `LibC.syncfs`: one syncfs(2) per message
 * `{ id, args: [fd] }`, answered with `{ id, result }`: 0 or the errno.
 */
const SYNCFS_WORKER_SOURCE = `
import { dlopen, FFIType, read as peek } from "bun:ffi";
const lib = dlopen("libc.so.6", {
  syncfs: { args: [FFIType.i32], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
});
self.onmessage = (e) => {
  const { id, args } = e.data;
  const r = lib.symbols.syncfs(args[0]);
  const result = r < 0 ? peek.i32(lib.symbols.__errno_location(), 0) || 5 : 0;
  self.postMessage({ id, result });
};
`;

/**
 * The worker behind `LibC.pollAsync`: one poll(2) of one fd per message
 * `{ id, args: [fd, events, timeoutMs] }`, answered with `{ id, result }`:
 * the returned events (POLLERR if poll itself failed).
 */
const POLL_WORKER_SOURCE = `
import { dlopen, FFIType } from "bun:ffi";
const lib = dlopen("libc.so.6", {
  poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
});
const buf = new Uint8Array(8);
const view = new DataView(buf.buffer);
self.onmessage = (e) => {
  const { id, args } = e.data;
  view.setInt32(0, args[0], true);
  view.setInt16(4, args[1], true);
  view.setInt16(6, 0, true);
  const r = lib.symbols.poll(buf, 1n, args[2]);
  self.postMessage({ id, result: r < 0 ? ${POLLERR} : view.getUint16(6, true) });
};
`;

let syncfsCalls: BlockingCallWorker | undefined;
let pollCalls: BlockingCallWorker | undefined;

/**
 * A worker, started on first use and kept (a worker start costs more than
 * most calls), that runs one kind of blocking libc call per message, in
 * order. It holds the process open only while a call is pending.
 */
class BlockingCallWorker {
  #source: string;
  #worker: Any;
  #url: string | undefined;
  #next = 0;
  #waiting = new Map<
    number,
    { resolve: (r: number) => void; reject: (e: Error) => void }
  >();

  constructor(source: string) {
    this.#source = source;
  }

  /** Runs the call with `args`; resolves with the worker's number. */
  call(args: number[]): Promise<number> {
    const w = this.#worker ?? this.#start();
    const id = this.#next++;
    return new Promise<number>((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      w.ref?.();
      w.postMessage({ id, args });
    });
  }

  #start(): Any {
    this.#url = URL.createObjectURL(
      new Blob([this.#source], { type: "text/javascript" }),
    );
    const w: Any = new Worker(this.#url, { type: "module", smol: true } as Any);
    w.onmessage = (e: MessageEvent) => {
      const { id, result } = e.data as { id: number; result: number };
      const p = this.#waiting.get(id);
      this.#waiting.delete(id);
      if (this.#waiting.size === 0) w.unref?.();
      p?.resolve(result);
    };
    w.onerror = (e: ErrorEvent) => {
      const err = new Error(`libc call worker failed: ${e.message}`);
      for (const p of this.#waiting.values()) p.reject(err);
      this.#waiting.clear();
      w.terminate();
      if (this.#url) URL.revokeObjectURL(this.#url);
      this.#worker = undefined;
    };
    this.#worker = w;
    return w;
  }
}
