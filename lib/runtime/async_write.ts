/**
 * write(2) on a worker thread, for messages that may block in the kernel
 * until the main thread has answered something else (FUSE notifications
 * store into pages the kernel may have locked for a READ we have yet to
 * answer). Writes queued during one turn of the event loop go to the worker
 * as one message, so the main thread pays little per write.
 *
 * The worker travels as a Blob URL (a sibling worker file would not be found
 * inside a compiled binary) and binds libc's `write` itself: `Deno.dlopen`
 * under Deno, `bun:ffi` under Bun.
 *
 * @module
 */

/** write(2) calls run in order on another thread. */
export interface OffThreadWriter {
  /**
   * Queues one write(2) of `data`, which the writer takes over (a buffer
   * that `data` spans whole is moved to the worker and so detached here):
   * resolves true if the whole message was written, false on any error
   * (errno is not reported) or once the writer is closed.
   */
  write(data: Uint8Array): Promise<boolean>;
  /** Writes queued or under way (a write queued now goes after them). */
  readonly pending: number;
  /** Stops the worker; pending writes resolve false. */
  close(): void;
}

const DENO_WORKER = `
const lib = Deno.dlopen("libc.so.6", {
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
});
self.onmessage = (e) => {
  const { fd, id, bufs } = e.data;
  const ok = new Uint8Array(bufs.length);
  for (let i = 0; i < bufs.length; i++) {
    const b = new Uint8Array(bufs[i]);
    ok[i] = Number(lib.symbols.write(fd, b, BigInt(b.byteLength))) === b.byteLength ? 1 : 0;
  }
  self.postMessage({ id, ok }, [ok.buffer]);
};
`;

const BUN_WORKER = `
import { dlopen, FFIType } from "bun:ffi";
const lib = dlopen("libc.so.6", {
  write: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
});
self.onmessage = (e) => {
  const { fd, id, bufs } = e.data;
  const ok = new Uint8Array(bufs.length);
  for (let i = 0; i < bufs.length; i++) {
    const b = new Uint8Array(bufs[i]);
    ok[i] = b.byteLength > 0 &&
      Number(lib.symbols.write(fd, b, BigInt(b.byteLength))) === b.byteLength ? 1 : 0;
  }
  self.postMessage({ id, ok }, [ok.buffer]);
};
`;

/**
 * A writer for `fd` on its own worker thread, or `undefined` where this
 * runtime cannot start one (no Worker, no FFI).
 */
export function offThreadWriter(fd: number): OffThreadWriter | undefined {
  const g = globalThis as Record<string, unknown>;
  const source = g.Bun !== undefined
    ? BUN_WORKER
    : g.Deno !== undefined
    ? DENO_WORKER
    : undefined;
  if (source === undefined || typeof Worker === "undefined") return undefined;
  const url = URL.createObjectURL(
    new Blob([source], { type: "text/javascript" }),
  );
  let worker: Worker;
  try {
    worker = new Worker(url, { type: "module" });
  } catch {
    URL.revokeObjectURL(url);
    return undefined;
  }
  let queued: { data: Uint8Array; done: (ok: boolean) => void }[] = [];
  const sent = new Map<number, ((ok: boolean) => void)[]>();
  let nextId = 0;
  let closed = false;
  let inFlight = 0;
  const failAll = () => {
    for (const q of queued) q.done(false);
    queued = [];
    for (const d of sent.values()) for (const f of d) f(false);
    sent.clear();
    inFlight = 0;
  };
  worker.onmessage = (e: MessageEvent) => {
    const { id, ok } = e.data as { id: number; ok: Uint8Array };
    const dones = sent.get(id);
    sent.delete(id);
    inFlight -= dones?.length ?? 0;
    dones?.forEach((f, i) => f(ok[i] === 1));
  };
  worker.onerror = (e: Event) => {
    e.preventDefault?.();
    closed = true;
    failAll();
    worker.terminate();
  };
  const flush = () => {
    if (closed || queued.length === 0) return;
    const batch = queued;
    queued = [];
    const id = nextId++;
    sent.set(id, batch.map((q) => q.done));
    inFlight += batch.length;
    // Whole buffers are moved; views into a larger buffer are copied.
    const bufs = batch.map(({ data: d }) =>
      d.byteOffset === 0 && d.byteLength === d.buffer.byteLength &&
        d.buffer instanceof ArrayBuffer
        ? d.buffer
        : d.slice().buffer
    );
    worker.postMessage({ fd, id, bufs }, bufs);
  };
  return {
    get pending() {
      return queued.length + inFlight;
    },
    write(data) {
      if (closed) return Promise.resolve(false);
      return new Promise<boolean>((done) => {
        if (queued.length === 0) queueMicrotask(flush);
        queued.push({ data, done });
      });
    },
    close() {
      if (closed) return;
      closed = true;
      worker.terminate();
      URL.revokeObjectURL(url);
      failAll();
    },
  };
}
