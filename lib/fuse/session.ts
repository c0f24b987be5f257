/**
 * The FUSE request loop: a few reader loops on one `/dev/fuse` fd, each
 * awaiting the next request and handing it to the file system without
 * waiting for the answer, so many requests are in flight at once. Every
 * reply is one synchronous `write` of header + payload.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  type DeviceReader,
  EAGAIN,
  type LibC,
  POLLIN,
} from "../runtime/libc.ts";
import {
  type OffThreadWriter,
  offThreadWriter,
} from "../runtime/async_write.ts";
import { type DirEntry, FuseError, type FuseFilesystem } from "./filesystem.ts";
import {
  ATTR_OUT_SIZE,
  cName,
  direntSize,
  encodeInitOut,
  encodeNotifyStore,
  ENTRY_OUT_SIZE,
  Errno,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  IN_HEADER_SIZE,
  type InHeader,
  InitFlag,
  Op,
  OPEN_OUT_SIZE,
  OUT_HEADER_SIZE,
  parseInHeader,
  parseInitIn,
  STATFS_OUT_SIZE,
  WRITE_OPS,
  writeAttrOut,
  writeDirent,
  writeEntryOut,
} from "./protocol.ts";

const log = getLogger(["snix", "fuse"]);

/** Largest READ we accept (and max_write): 1 MiB = 256 pages. */
export const MAX_IO = 1 << 20;
/** Read buffer per loop: at least max(8192, 80 + max_write). */
export const READ_BUFFER_SIZE = MAX_IO + 4096;
const ENOENT = 2;
const EINTR = 4;
/**
 * How long the direct loop waits on the main thread for the next request
 * once every request has been answered and the file system has no work of
 * its own under way (ms); then it waits off the thread.
 */
const DIRECT_WAIT_MS = 2;
/** Microtask turns the direct loop lets replies finish in before it waits. */
const DIRECT_SETTLE_TURNS = 64;
/**
 * How long the direct loop spins (polling with a zero timeout) for the next
 * request before it blocks in poll(2) (ms). A walker (find, tar) sends its
 * next request within microseconds of our reply (the end-of-directory
 * READDIR) or a few tens of them (the next directory); a blocked thread is
 * woken through a halted vCPU here (guest_halt_poll_ns=0), which cost more
 * than the answer itself. Fresh `find -ls` of the 50k-entry tree (bench_fuse
 * --tree-only --repeat 3, the binary, interleaved, load ~2, steal < 80):
 * 2.31-3.59 s without, 1.64-1.81 s with (disk cold 1.12-1.82 s); mount CPU
 * about the same (1.75-2.41 s vs 1.90-2.05 s; the walk is shorter); fresh
 * `tar c` 4.55-8.19 s vs 4.19-4.69 s, its CPU 3.4-5.5 s vs 4.7-5.2 s.
 */
const DIRECT_SPIN_MS = 0.25;

/** Microtask turns a background slice of the file system gets to finish. */
const IDLE_SETTLE_TURNS = 8;

/**
 * `f(v)` now if `v` is a value, once it resolves if it is a promise: a file
 * system may answer synchronously, and then so does the session (no
 * promise turns per request).
 */
function then<T>(
  v: T | Promise<T>,
  f: (v: T) => void,
): Promise<void> | void {
  return v instanceof Promise ? v.then(f) : f(v);
}

/** Options of a session. */
export interface SessionOptions {
  /**
   * Number of reader loops (default 2). Each loop hands a request over and
   * reads the next at once, so one loop already keeps many requests in
   * flight; more loops mostly add thread wake-ups on a small machine.
   */
  threads?: number;
  /**
   * Read requests on the main thread (non-blocking reads of the device,
   * waiting for the next request briefly in poll(2) once all are answered,
   * else off the thread), where the runtime allows (Deno); default true.
   * A walker (find, tar) sends one request at a time: woken straight from
   * poll, the main thread answers without the hand-over from a reading
   * thread, which on a busy machine is the larger part of each round trip.
   * Otherwise (and under Bun) `threads` reader loops read on other threads.
   */
  direct?: boolean;
  /**
   * Let the file system push data to the kernel unasked (FUSE_NOTIFY_STORE;
   * default true). Needs an off-thread write (Deno); without one (Bun) the
   * file system gets no notifier.
   */
  notify?: boolean;
}

/** Serves one FUSE connection until the kernel ends it. */
export class FuseSession {
  #libc: LibC;
  #fd: number;
  #fs: FuseFilesystem;
  #threads: number;
  #notify: boolean;
  #direct: boolean;
  #stopped = false;
  /** Requests dispatched and not yet answered. */
  #inflight = 0;
  #writer: OffThreadWriter | undefined;
  /** The reply buffer (see {@linkcode #reply}). */
  #outBuf = new Uint8Array(READ_BUFFER_SIZE);
  #outView = new DataView(this.#outBuf.buffer);
  #readers: DeviceReader[] = [];
  #initialized = false;
  #done: Promise<void> | undefined;
  /** Requests answered so far (for tests and stats). */
  requests = 0;
  /** Requests received, by opcode (for diagnostics). */
  readonly opCounts: Map<number, number> = new Map();
  /** Milliseconds spent answering, by opcode (for diagnostics). */
  readonly opTimes: Map<number, number> = new Map();
  /** Resolves once INIT has been answered. */
  readonly ready: Promise<void>;
  #readyResolve!: () => void;

  constructor(
    libc: LibC,
    fd: number,
    fs: FuseFilesystem,
    options: SessionOptions = {},
  ) {
    this.#libc = libc;
    this.#fd = fd;
    this.#fs = fs;
    this.#threads = Math.max(1, Math.min(16, options.threads ?? 2));
    this.#notify = options.notify ?? true;
    this.#direct = options.direct ?? true;
    this.ready = new Promise((r) => this.#readyResolve = r);
  }

  /** Starts the reader loops; the promise settles when the connection ends. */
  run(): Promise<void> {
    this.#done ??= (async () => {
      const loops = [];
      const c = this.#libc;
      if (
        this.#direct && c.readNow && c.pollAsync && c.setNonBlocking?.(this.#fd)
      ) {
        loops.push(this.#directLoop());
      } else {
        for (let i = 0; i < this.#threads; i++) {
          const reader = this.#libc.reader(this.#fd, READ_BUFFER_SIZE);
          this.#readers.push(reader);
          loops.push(this.#loop(reader));
        }
      }
      try {
        await Promise.all(loops);
      } finally {
        // A reader thread left running keeps the process alive (Bun).
        for (const r of this.#readers) r.close();
        this.#writer?.close();
        this.#fs.destroy?.();
        const w = this.waitCounts;
        log.debug(
          "waits for a request: {spun} spinning, {polled} in poll(2), {off} off the thread",
          { spun: w.spun, polled: w.polled, off: w.offThread },
        );
      }
    })();
    return this.#done;
  }

  /** Stops reading (the kernel connection ends with the unmount). */
  stop(): void {
    this.#stopped = true;
    for (const r of this.#readers) r.close();
  }

  async #loop(reader: DeviceReader): Promise<void> {
    for (;;) {
      const msg = await reader.read();
      if (msg === null) return;
      this.#take(msg);
    }
  }

  /**
   * Reads requests on this thread from the (non-blocking) device: all that
   * are queued, then, once all are answered, waits for the next one:
   * spinning for up to {@linkcode DIRECT_SPIN_MS}, then in poll(2) for up to
   * {@linkcode DIRECT_WAIT_MS} (woken straight by the kernel), else in
   * poll(2) off the thread.
   */
  async #directLoop(): Promise<void> {
    const c = this.#libc;
    const fd = this.#fd;
    const buf = new Uint8Array(READ_BUFFER_SIZE);
    // Only a read tells that the connection is gone (0 or ENODEV): poll(2)
    // also fails on a signal (EINTR), and its POLLERR is only a hint.
    let idleWakeups = 0;
    for (;;) {
      let got = 0;
      for (;;) {
        const n = c.readNow!(fd, buf);
        if (n > 0) {
          this.#take(buf.subarray(0, n));
          got++;
        } else if (n === -EAGAIN) break;
        // EINTR; ENOENT: the request was interrupted before we read it.
        else if (n === -EINTR || n === -ENOENT) continue;
        else return; // 0 or ENODEV: the connection is gone
      }
      if (this.#stopped) return;
      if (got > 0) {
        idleWakeups = 0;
        // Let what was just dispatched answer (mostly within microtasks).
        for (let i = 0; i < DIRECT_SETTLE_TURNS && this.#inflight > 0; i++) {
          await null;
        }
        if (this.#inflight === 0 && !this.#fs.busy?.()) {
          if (this.#fs.idle && await this.#idleWork()) continue;
          if (this.#spin(fd)) {
            this.waitCounts.spun++;
            continue;
          }
          if (c.poll(fd, POLLIN, DIRECT_WAIT_MS) !== 0) {
            this.waitCounts.polled++;
            continue;
          }
        }
      } else if (++idleWakeups > 100) {
        // Woken again and again with nothing to read: do not spin.
        await new Promise((r) => setTimeout(r, 10));
        idleWakeups = 0;
      }
      this.waitCounts.offThread++;
      await c.pollAsync!(fd, POLLIN, -1);
    }
  }

  /**
   * How the direct loop's waits for a request ended (for diagnostics):
   * caught while spinning, woken in poll(2) on this thread, or waited for
   * off the thread.
   */
  readonly waitCounts = { spun: 0, polled: 0, offThread: 0 };

  /**
   * Polls `fd` without blocking for up to {@linkcode DIRECT_SPIN_MS}; true
   * once a request is waiting.
   */
  #spin(fd: number): boolean {
    const c = this.#libc;
    const end = performance.now() + DIRECT_SPIN_MS;
    do {
      if (c.poll(fd, POLLIN, 0) !== 0) return true;
    } while (performance.now() < end);
    return false;
  }

  /**
   * Gives the file system's background work slices while no request is
   * waiting; true once one is (or the work made requests of its own).
   */
  async #idleWork(): Promise<boolean> {
    const c = this.#libc;
    for (;;) {
      if (c.poll(this.#fd, POLLIN, 0) !== 0) return true;
      if (!this.#fs.idle!()) return false;
      // Let the slice's microtasks finish.
      for (let i = 0; i < IDLE_SETTLE_TURNS; i++) await null;
    }
  }

  /** Parses and dispatches one request read into `msg` (a reused buffer). */
  #take(msg: Uint8Array): void {
    let h: InHeader;
    try {
      h = parseInHeader(msg);
    } catch (e) {
      log.warn("dropping malformed request: {error}", {
        error: (e as Error).message,
      });
      return;
    }
    this.opCounts.set(h.opcode, (this.opCounts.get(h.opcode) ?? 0) + 1);
    // Copy the body: the reader reuses its buffer for the next request.
    const body = msg.slice(IN_HEADER_SIZE, Math.min(h.len, msg.byteLength));
    this.#dispatch(h, body);
  }

  #dispatch(h: InHeader, body: Uint8Array): void {
    let p: Promise<void> | void;
    const t0 = performance.now();
    this.#inflight++;
    const done = () => {
      this.#inflight--;
      const t = this.opTimes.get(h.opcode) ?? 0;
      this.opTimes.set(h.opcode, t + performance.now() - t0);
    };
    try {
      p = this.#handle(h, body);
    } catch (e) {
      this.#fail(h, e);
      return done();
    }
    if (p) p.catch((e) => this.#fail(h, e)).finally(done);
    else done();
  }

  #fail(h: InHeader, e: unknown): void {
    if (e instanceof FuseError) {
      this.#error(h.unique, e.errno);
      return;
    }
    log.warn("op {op} on inode {ino} failed: {error}", {
      op: h.opcode,
      ino: String(h.nodeid),
      error: e instanceof Error ? e.message : String(e),
    });
    this.#error(h.unique, Errno.EIO);
  }

  /**
   * Writes a reply. With `afterNotifications` it goes after the
   * notifications queued so far (the walker it wakes up is to find their
   * data in place). Never for READ replies: a notification may be waiting in
   * the kernel for exactly such a reply (a page locked for a READ).
   */
  #write(buf: Uint8Array, afterNotifications = false): void {
    this.requests++;
    if (afterNotifications && this.#writer && this.#writer.pending > 0) {
      // The writer takes the buffer over: hand it a copy of a shared one.
      this.#writer.write(buf.slice());
      return;
    }
    const n = this.#libc.write(this.#fd, buf);
    // ENOENT: the request was interrupted meanwhile; nothing to do.
    if (n < 0 && n !== -ENOENT) {
      log.debug("reply write failed: errno {errno}", { errno: -n });
    }
  }

  /**
   * A success reply made of `parts` (READ data: views of cached blob
   * segments), sent with one writev instead of being copied together.
   */
  #writeParts(unique: bigint, parts: Uint8Array[]): void {
    const len = parts.reduce((n, p) => n + p.byteLength, 0);
    const [head, hv] = this.#reply(unique, 0);
    hv.setUint32(0, OUT_HEADER_SIZE + len, true);
    this.requests++;
    const n = this.#libc.writev(this.#fd, [head, ...parts]);
    // ENOENT: the request was interrupted meanwhile; nothing to do.
    if (n < 0 && n !== -ENOENT) {
      log.debug("reply write failed: errno {errno}", { errno: -n });
    }
  }

  #error(unique: bigint, errno: number): void {
    const out = new Uint8Array(OUT_HEADER_SIZE);
    const v = new DataView(out.buffer);
    v.setUint32(0, OUT_HEADER_SIZE, true);
    v.setInt32(4, -errno, true);
    v.setBigUint64(8, unique, true);
    this.#write(out);
  }

  /**
   * A reply buffer with the header filled in and `size` zeroed payload
   * bytes: a view of one buffer reused by every reply (each is written out
   * synchronously before the next is made; {@linkcode #write} copies one it
   * queues behind notifications).
   */
  #reply(unique: bigint, size: number): [Uint8Array, DataView] {
    const len = OUT_HEADER_SIZE + size;
    if (len > this.#outBuf.byteLength) {
      this.#outBuf = new Uint8Array(len);
      this.#outView = new DataView(this.#outBuf.buffer);
    }
    const out = this.#outBuf.subarray(0, len);
    out.fill(0);
    const v = this.#outView;
    v.setUint32(0, len, true);
    v.setBigUint64(8, unique, true);
    return [out, v];
  }

  #ok(unique: bigint, payload?: Uint8Array): void {
    const [out] = this.#reply(unique, payload?.byteLength ?? 0);
    if (payload) out.set(payload, OUT_HEADER_SIZE);
    this.#write(out);
  }

  #handle(h: InHeader, body: Uint8Array): Promise<void> | void {
    const fs = this.#fs;
    const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const ttl = fs.entryTimeout;
    if (!this.#initialized && h.opcode !== Op.INIT) {
      return this.#error(h.unique, Errno.EIO);
    }
    switch (h.opcode) {
      case Op.INIT:
        return this.#init(h, body);
      case Op.DESTROY:
        return this.#ok(h.unique);
      case Op.FORGET:
        fs.forget?.(h.nodeid, v.getBigUint64(0, true));
        return;
      case Op.BATCH_FORGET: {
        const count = v.getUint32(0, true);
        for (let i = 0; i < count && 8 + i * 16 + 16 <= body.byteLength; i++) {
          fs.forget?.(
            v.getBigUint64(8 + i * 16, true),
            v.getBigUint64(16 + i * 16, true),
          );
        }
        return;
      }
      case Op.INTERRUPT:
        // We do not cancel work; the late reply fails with ENOENT, ignored.
        return;
      case Op.LOOKUP:
        return then(fs.lookup(h.nodeid, cName(body)), (attr) => {
          const [out, ov] = this.#reply(h.unique, ENTRY_OUT_SIZE);
          writeEntryOut(ov, OUT_HEADER_SIZE, attr, {
            entrySec: ttl,
            attrSec: ttl,
          });
          this.#write(out);
        });
      case Op.GETATTR:
        return then(fs.getattr(h.nodeid), (attr) => {
          const [out, ov] = this.#reply(h.unique, ATTR_OUT_SIZE);
          writeAttrOut(ov, OUT_HEADER_SIZE, attr, ttl);
          this.#write(out);
        });
      case Op.READLINK:
        return then(fs.readlink(h.nodeid), (t) => this.#ok(h.unique, t));
      case Op.OPEN:
      case Op.OPENDIR: {
        const flags = v.getUint32(0, true);
        if ((flags & 3) !== 0) throw new FuseError(Errno.EROFS);
        const p = h.opcode === Op.OPEN
          ? fs.open(h.nodeid, flags)
          : fs.opendir(h.nodeid);
        return p.then((r) => {
          const [out, ov] = this.#reply(h.unique, OPEN_OUT_SIZE);
          ov.setBigUint64(OUT_HEADER_SIZE, r.fh, true);
          ov.setUint32(OUT_HEADER_SIZE + 8, r.flags, true);
          this.#write(out);
        });
      }
      case Op.READ: {
        const fh = v.getBigUint64(0, true);
        const offset = Number(v.getBigUint64(8, true));
        const size = Math.min(v.getUint32(16, true), MAX_IO);
        const direct = fs.readDirect?.(h.nodeid, offset, size, h.unique);
        if (direct === true) {
          this.requests++;
          return;
        }
        if (direct instanceof Promise) {
          return direct.then((taken) => {
            if (taken) this.requests++;
            else return this.#read(h.unique, h.nodeid, fh, offset, size);
          });
        }
        return this.#read(h.unique, h.nodeid, fh, offset, size);
      }
      case Op.RELEASE:
        fs.release(h.nodeid, v.getBigUint64(0, true));
        return this.#ok(h.unique);
      case Op.RELEASEDIR:
        fs.releasedir(h.nodeid, v.getBigUint64(0, true));
        return this.#ok(h.unique);
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.#readdir(h, v, h.opcode === Op.READDIRPLUS);
      case Op.GETXATTR: {
        const size = v.getUint32(0, true);
        return fs.getxattr(h.nodeid, cName(body.subarray(8))).then((value) => {
          if (size === 0) {
            const [out, ov] = this.#reply(h.unique, 8);
            ov.setUint32(OUT_HEADER_SIZE, value.byteLength, true);
            return this.#write(out);
          }
          if (size < value.byteLength) {
            return this.#error(h.unique, Errno.ERANGE);
          }
          this.#ok(h.unique, value);
        });
      }
      case Op.LISTXATTR: {
        const size = v.getUint32(0, true);
        return fs.listxattr(h.nodeid).then((names) => {
          const total = names.reduce((n, name) => n + name.byteLength + 1, 0);
          if (size === 0) {
            const [out, ov] = this.#reply(h.unique, 8);
            ov.setUint32(OUT_HEADER_SIZE, total, true);
            return this.#write(out);
          }
          if (size < total) return this.#error(h.unique, Errno.ERANGE);
          const [out] = this.#reply(h.unique, total);
          let o = OUT_HEADER_SIZE;
          for (const name of names) {
            out.set(name, o);
            o += name.byteLength + 1;
          }
          this.#write(out);
        });
      }
      case Op.STATFS: {
        const s = fs.statfs();
        const [out, ov] = this.#reply(h.unique, STATFS_OUT_SIZE);
        const o = OUT_HEADER_SIZE;
        ov.setBigUint64(o, BigInt(s.blocks), true); // blocks
        ov.setBigUint64(o + 24, BigInt(s.files), true); // files
        ov.setUint32(o + 40, s.bsize, true);
        ov.setUint32(o + 44, s.namelen, true);
        ov.setUint32(o + 48, s.bsize, true); // frsize
        return this.#write(out);
      }
      case Op.ACCESS: {
        const mask = v.getUint32(0, true);
        return mask & 2
          ? this.#error(h.unique, Errno.EROFS)
          : this.#ok(h.unique);
      }
      case Op.FLUSH:
        // Nothing to flush in a read-only file system; ENOSYS makes the
        // kernel stop sending FLUSH on every close.
        return this.#error(h.unique, Errno.ENOSYS);
      default:
        if (WRITE_OPS.has(h.opcode)) return this.#error(h.unique, Errno.EROFS);
        return this.#error(h.unique, Errno.ENOSYS);
    }
  }

  /** A READ answered with what {@linkcode FuseFilesystem.read} gives. */
  #read(
    unique: bigint,
    ino: bigint,
    fh: bigint,
    offset: number,
    size: number,
  ): Promise<void> | void {
    return then(
      this.#fs.read(ino, fh, offset, size),
      (data) => this.#writeParts(unique, Array.isArray(data) ? data : [data]),
    );
  }

  /** A READ the file system took over and gave back (see FuseDevice.read). */
  #readLate(unique: bigint, ino: bigint, offset: number, size: number): void {
    const h = { unique, opcode: Op.READ, nodeid: ino } as InHeader;
    let p: Promise<void> | void;
    try {
      p = this.#read(unique, ino, 0n, offset, size);
    } catch (e) {
      return this.#fail(h, e);
    }
    if (p) p.catch((e) => this.#fail(h, e));
  }

  #init(h: InHeader, body: Uint8Array): Promise<void> | void {
    this.#fs.attachDevice?.({
      fd: this.#fd,
      read: (unique, ino, offset, size) =>
        this.#readLate(unique, ino, offset, size),
    });
    const prepare = this.#fs.prepare;
    if (!prepare) return this.#initReply(h, body);
    // The file system readies itself first (the mount is unusable until
    // INIT is answered, so nothing waits behind a half-ready file system).
    return prepare.call(this.#fs).catch((e) =>
      log.warn("preparing the file system failed: {error}", {
        error: (e as Error).message,
      })
    ).then(() => this.#initReply(h, body));
  }

  #initReply(h: InHeader, body: Uint8Array): void {
    const kin = parseInitIn(body);
    if (kin.major !== FUSE_KERNEL_VERSION) {
      // A newer major: answer with ours and wait for a matching INIT.
      if (kin.major > FUSE_KERNEL_VERSION) {
        const out = encodeInitOut({
          major: FUSE_KERNEL_VERSION,
          minor: FUSE_KERNEL_MINOR_VERSION,
          maxReadahead: 0,
          flags: 0,
          maxBackground: 0,
          congestionThreshold: 0,
          maxWrite: 0,
          timeGran: 0,
          maxPages: 0,
        });
        return this.#ok(h.unique, out.subarray(0, 8));
      }
      log.error("kernel speaks FUSE {major}.{minor}; we need 7.x", {
        major: kin.major,
        minor: kin.minor,
      });
      return this.#error(h.unique, Errno.EPROTO);
    }
    const minor = Math.min(kin.minor, FUSE_KERNEL_MINOR_VERSION);
    if (minor < 23) {
      log.error("kernel speaks FUSE 7.{minor}; we need at least 7.23", {
        minor,
      });
      return this.#error(h.unique, Errno.EPROTO);
    }
    // READDIRPLUS always, not READDIRPLUS_AUTO: with AUTO the kernel asks
    // with plain READDIR past the first reply of a directory (a getdents
    // buffer, 32 KiB from glibc: ~200 entries with attributes), and a walker
    // that stats then sends one LOOKUP per further entry: a fresh find -ls of
    // the 50k-entry tree sent 299 LOOKUPs for its 500-entry top directory;
    // now 2 more READDIRPLUS. The end-of-directory call becomes an (empty)
    // READDIRPLUS, as cheap. A castore listing never changes, so the
    // attributes are never wasted work on our side.
    const want = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES |
      InitFlag.PARALLEL_DIROPS |
      InitFlag.MAX_PAGES | InitFlag.CACHE_SYMLINKS | InitFlag.DO_READDIRPLUS;
    const out = encodeInitOut({
      major: FUSE_KERNEL_VERSION,
      minor,
      maxReadahead: kin.maxReadahead,
      flags: (want & kin.flags) >>> 0,
      maxBackground: 64,
      congestionThreshold: 48,
      maxWrite: MAX_IO,
      timeGran: 1,
      maxPages: MAX_IO / 4096,
    });
    this.#initialized = true;
    this.#ok(h.unique, out);
    if (this.#notify && this.#fs.attachNotifier) this.#attachNotifier();
    log.debug("FUSE INIT: kernel 7.{kminor}, using 7.{minor}, flags {flags}", {
      kminor: kin.minor,
      minor,
      flags: (want & kin.flags).toString(16),
    });
    this.#readyResolve();
  }

  #attachNotifier(): void {
    if (typeof Worker === "undefined") return;
    let tried = false;
    this.#fs.attachNotifier?.({
      store: (ino, offset, data) => {
        // The writer thread starts with the first notification: a mount
        // that is only listed (find, ls -R) never needs it.
        if (!tried) {
          tried = true;
          this.#writer = offThreadWriter(this.#fd);
        }
        const w = this.#writer;
        return w
          ? w.write(encodeNotifyStore(ino, offset, data))
          : Promise.resolve(false);
      },
    });
  }

  #readdir(h: InHeader, v: DataView, plus: boolean): Promise<void> | void {
    const fh = v.getBigUint64(0, true);
    const offset = Number(v.getBigUint64(8, true));
    const size = v.getUint32(16, true);
    return then(
      this.#fs.readdir(h.nodeid, fh, offset),
      (entries) => this.#readdirReply(h, entries, offset, size, plus),
    );
  }

  #readdirReply(
    h: InHeader,
    entries: DirEntry[],
    offset: number,
    size: number,
    plus: boolean,
  ): void {
    const ttl = this.#fs.entryTimeout;
    // The kernel offers up to max_pages of room; allocate only what fits.
    let used = 0;
    let count = 0;
    for (const e of entries) {
      const rec = (plus ? ENTRY_OUT_SIZE : 0) + direntSize(e.name.byteLength);
      if (used + rec > size) break;
      used += rec;
      count++;
    }
    const [out, ov] = this.#reply(h.unique, used);
    let o = OUT_HEADER_SIZE;
    for (let i = 0; i < count; i++) {
      const e = entries[i];
      const type = (e.attr.mode >> 12) & 0xf;
      if (plus) {
        if (e.lookup) {
          writeEntryOut(ov, o, e.attr, { entrySec: ttl, attrSec: ttl });
        }
        // `.` and `..` keep an all-zero entry (nodeid 0): no lookup reference.
        o += ENTRY_OUT_SIZE;
      }
      o += writeDirent(out, ov, o, e.attr.ino, offset + i + 1, type, e.name);
    }
    this.#write(out, true);
  }
}
