/**
 * The {@linkcode LibC} binding for Bun: `bun:ffi` on libc.so.6. Bun has no
 * FFI calls that run off the main thread, so each {@linkcode DeviceReader}
 * is a `Worker` doing plain blocking `read`s and posting each message back,
 * and `syncfs` runs in one long-lived worker too.
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
    write: {
      args: [FFIType.i32, FFIType.ptr, FFIType.u64],
      returns: FFIType.i64,
    },
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
    __errno_location: { args: [], returns: FFIType.ptr },
  });
  const s = lib.symbols;
  const errno = (): number => peek.i32(s.__errno_location(), 0);
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
      const buf = new Uint8Array(8);
      const view = new DataView(buf.buffer);
      view.setInt32(0, fd, true);
      view.setInt16(4, events, true);
      const r = s.poll(buf, 1n, timeoutMs);
      return r < 0 ? POLLERR : view.getUint16(6, true);
    },
    syncfs: syncfsInWorker,
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

/**
 * The worker behind `LibC.syncfs`: one syncfs(2) per message `{ id, fd }`,
 * answered with `{ id, errno }` (0 on success).
 */
const SYNCFS_WORKER_SOURCE = `
import { dlopen, FFIType, read as peek } from "bun:ffi";
const lib = dlopen("libc.so.6", {
  syncfs: { args: [FFIType.i32], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
});
self.onmessage = (e) => {
  const { id, fd } = e.data;
  const r = lib.symbols.syncfs(fd);
  const errno = r < 0 ? peek.i32(lib.symbols.__errno_location(), 0) || 5 : 0;
  self.postMessage({ id, errno });
};
`;

let syncWorker: Any;
let syncUrl: string | undefined;
let syncNext = 0;
const syncWaiting = new Map<
  number,
  { resolve: () => void; reject: (e: Error) => void }
>();

/**
 * syncfs(2) in a worker started on first use and kept (a worker start costs
 * more than a commit of a small batch). It holds the process open only while
 * a call is pending.
 */
function syncfsInWorker(fd: number): Promise<void> {
  if (!syncWorker) {
    syncUrl = URL.createObjectURL(
      new Blob([SYNCFS_WORKER_SOURCE], { type: "text/javascript" }),
    );
    const w: Any = new Worker(syncUrl, { type: "module", smol: true } as Any);
    w.onmessage = (e: MessageEvent) => {
      const { id, errno } = e.data as { id: number; errno: number };
      const p = syncWaiting.get(id);
      syncWaiting.delete(id);
      if (syncWaiting.size === 0) w.unref?.();
      if (!p) return;
      if (errno === 0) p.resolve();
      else p.reject(new OsError("syncfs", errno));
    };
    w.onerror = (e: ErrorEvent) => {
      const err = new Error(`syncfs worker failed: ${e.message}`);
      for (const p of syncWaiting.values()) p.reject(err);
      syncWaiting.clear();
      w.terminate();
      if (syncUrl) URL.revokeObjectURL(syncUrl);
      syncWorker = undefined;
    };
    syncWorker = w;
  }
  const id = syncNext++;
  return new Promise<void>((resolve, reject) => {
    syncWaiting.set(id, { resolve, reject });
    syncWorker.ref?.();
    syncWorker.postMessage({ id, fd });
  });
}
