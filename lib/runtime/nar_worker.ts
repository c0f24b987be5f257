/**
 * The source of the NAR workers of lib/castore/nar_to_fd.ts: a module given
 * to `new Worker` as text (see ./chunk_worker.ts, whose prelude it starts
 * with; it lives in lib/runtime because it calls the runtimes' FFI).
 *
 * @module
 */
import { CHUNK_WORKER_PRELUDE } from "./chunk_worker.ts";

/**
 * The worker: writes its share of a NAR to a file descriptor itself. The
 * main thread cuts the NAR into jobs numbered 0, 1, 2, ... (NAR framing
 * bytes and references to stored chunks, about 1 MiB of output each) and
 * hands them out in turn; a worker reads each chunk's stored bytes,
 * decompresses and BLAKE3-checks them into its own buffer, then waits until
 * the shared turn counter says the job before it is written, writes the
 * job's bytes with writev(2) and moves the counter on. The decoded bytes
 * never travel back to the main thread; while one worker writes, the other
 * decodes.
 *
 * Messages in (after `{ t: "init", addons }`, answered `{ t: "ready", ok }`):
 * - `{ t: "begin", id, ctl, fd, slots, slotBytes }`: a NAR `id` goes to
 *   `fd`; `ctl` is a SharedArrayBuffer of two Int32: the number of the next
 *   job to be written, and a stop flag (non-zero: write nothing more);
 *   `slots` is shared memory of `slotBytes` per job handed out;
 * - `{ t: "paths", id, paths }`: the next files chunks are stored in (the
 *   pieces name them by number, in this order);
 * - `{ t: "job", id, seq, slot }`: job `seq` is in slot `slot`: three
 *   float64 (the counts of `ops`, `bytes` and `digests`), then `ops`
 *   (float64), `digests`, `bytes`. `ops` holds five numbers per piece of
 *   output, in order: `0, start, end, 0, 0` (bytes `start..end` of
 *   `bytes`) or `1, path, offset, length, size` (the next chunk: its zstd
 *   frame at `offset` of file `path`, `length` -1 for a whole loose file,
 *   `size` bytes decoded, its digest the next 32 bytes of `digests`);
 * - `{ t: "literal", id, seq, bytes }`: the whole output of a job this
 *   worker gave back (see `fail`), found by the main thread;
 * - `{ t: "end", id }`: after the last job;
 * - `{ t: "stop", id }`: the stop flag is set (ends a session waiting for a
 *   `literal` that will not come).
 *
 * Out: `{ t: "done", id, seq }` (job `seq` written; only for every fourth
 * job: the turn counter says how many are); `{ t: "fail", id, seq,
 * chunk }` (a chunk that could not be read or does not check out: nothing
 * of the job was written, and this worker holds its later jobs until the
 * `literal` for it comes); `{ t: "gone", id, seq, errno }` (the write
 * failed, e.g. EPIPE: the reader went away; the stop flag is set);
 * `{ t: "ended", id }`.
 */
export const NAR_WORKER_SOURCE = `
${CHUNK_WORKER_PRELUDE}
const EINTR = 4, EAGAIN = 11, IOV_MAX = 1024, DONE_EVERY = 4, RUN_MAX = 4 << 20;
const sessions = new Map();
let arena = new Uint8Array(new ArrayBuffer(2 << 20));
let framing = new Uint8Array(new ArrayBuffer(256 << 10));
let iov = new BigUint64Array(256);
let iovBytes = new Uint8Array(iov.buffer);
const roomFor = (n) => {
  if (iov.length >= 2 * n) return;
  iov = new BigUint64Array(2 * n + 64);
  iovBytes = new Uint8Array(iov.buffer);
};
const stopped = (s) => Atomics.load(s.ctl, 1) !== 0;
// Waits until job seq is next; false if stopped.
const waitTurn = (s, seq) => {
  for (;;) {
    const cur = Atomics.load(s.ctl, 0);
    if (cur === seq) return true;
    if (stopped(s)) return false;
    Atomics.wait(s.ctl, 0, cur, 200);
  }
};
// Writes iovecs 0..n-1 completely: 0, an errno, or -1 if stopped.
const writeAll = (s, n) => {
  let stuck = 0;
  while (n > 0) {
    let r = writev(s.fd, iovBytes, Math.min(n, IOV_MAX));
    if (r > 0) {
      stuck = 0;
      let i = 0;
      while (i < n && r >= Number(iov[2 * i + 1])) { r -= Number(iov[2 * i + 1]); i++; }
      if (r > 0) { iov[2 * i] += BigInt(r); iov[2 * i + 1] -= BigInt(r); }
      if (i > 0) { iov.copyWithin(0, 2 * i, 2 * n); n -= i; }
    } else if (r === -EAGAIN || r === 0) {
      // A non-blocking descriptor (a socket) that is full.
      if (stopped(s)) return -1;
      if (r === 0 && ++stuck > 100) return 5;
      pollOut(s.fd, 200);
    } else if (r !== -EINTR) return -r;
  }
  return 0;
};
const finish = (s, seq, n) => {
  if (!waitTurn(s, seq)) return;
  const e = writeAll(s, n);
  if (e !== 0) {
    if (e > 0) {
      Atomics.store(s.ctl, 1, 2);
      Atomics.notify(s.ctl, 0);
      self.postMessage({ t: "gone", id: s.id, seq, errno: e });
    }
    return;
  }
  Atomics.store(s.ctl, 0, seq + 1);
  Atomics.notify(s.ctl, 0);
  // (a message costs this thread ~20-50 us: one per DONE_EVERY jobs)
  if (seq % DONE_EVERY === DONE_EVERY - 1) self.postMessage({ t: "done", id: s.id, seq });
};
const runJob = (s, m) => {
  if (stopped(s)) return;
  const seq = m.seq, base = m.slot * s.slotBytes;
  const head = new Float64Array(s.slots, base, 3);
  const ops = new Float64Array(s.slots, base + 24, head[0]);
  const digests = new Uint8Array(s.slots, base + 24 + 8 * head[0], head[2]);
  // (a private copy: iovecs point into it)
  if (framing.length < head[1]) framing = new Uint8Array(new ArrayBuffer(head[1]));
  const bytes = framing.subarray(0, head[1]);
  bytes.set(new Uint8Array(s.slots, base + 24 + 8 * head[0] + head[2], head[1]));
  const paths = s.paths;
  let raw = 0;
  for (let i = 0; i < ops.length; i += 5) if (ops[i] === 1) raw += ops[i + 4];
  if (arena.length < raw) arena = new Uint8Array(new ArrayBuffer(raw + (raw >> 2)));
  roomFor(ops.length / 5);
  let at = 0, k = 0, n = 0;
  let run, runPath = -1, runStart = 0, runEnd = 0;
  for (let i = 0; i < ops.length; i += 5) {
    if (ops[i] === 0) {
      const a = ops[i + 1], b = ops[i + 2];
      if (b > a) { iov[2 * n] = addr(bytes.subarray(a, b)); iov[2 * n + 1] = BigInt(b - a); n++; }
      continue;
    }
    const size = ops[i + 4];
    const out = arena.subarray(at, at + size);
    let sound = false;
    try {
      const p = ops[i + 1], off = ops[i + 2], len = ops[i + 3];
      let stored;
      if (len < 0) stored = readStored(paths[p], off, len);
      else {
        if (p !== runPath || off < runStart || off + len > runEnd) {
          // One read for the chunks stored back to back from here (a walk
          // meets them in the order they were packed).
          let end = off + len;
          for (let j = i + 5; j < ops.length; j += 5) {
            if (ops[j] !== 1) continue;
            if (ops[j + 1] !== p || ops[j + 2] !== end || ops[j + 3] < 0 || end + ops[j + 3] - off > RUN_MAX) break;
            end += ops[j + 3];
          }
          run = readStored(paths[p], off, end - off);
          runPath = run ? p : -1;
          runStart = off;
          runEnd = end;
        }
        stored = run?.subarray(off - runStart, off - runStart + len);
      }
      sound = stored !== undefined && decodeVerified(out, stored, digests, k);
    } catch {
      sound = false;
    }
    if (!sound) {
      s.stalled = seq;
      self.postMessage({ t: "fail", id: s.id, seq, chunk: k });
      return;
    }
    if (size > 0) { iov[2 * n] = addr(out); iov[2 * n + 1] = BigInt(size); n++; }
    at += size;
    k++;
  }
  finish(s, seq, n);
};
const runLiteral = (s, m) => {
  s.stalled = -1;
  let n = 0;
  if (m.bytes.length > 0) { iov[0] = addr(m.bytes); iov[1] = BigInt(m.bytes.length); n = 1; }
  finish(s, m.seq, n);
};
const end = (s) => {
  sessions.delete(s.id);
  closeFiles();
  self.postMessage({ t: "ended", id: s.id });
};
// Handles a message of session s, holding it back while a job waits for its literal.
const handle = (s, m) => {
  if (m.t === "stop") {
    // (sent once the stop flag is set) Drop what waits for a literal.
    if (s.stalled < 0 || !stopped(s)) return;
    const ending = s.held.some((h) => h.t === "end");
    s.stalled = -1;
    s.held = [];
    if (ending) end(s);
    return;
  }
  if (s.stalled >= 0) {
    if (m.t === "literal" && m.seq === s.stalled) {
      runLiteral(s, m);
      while (s.held.length > 0 && s.stalled < 0) handle(s, s.held.shift());
    } else if (m.t === "end" && stopped(s)) end(s);
    else s.held.push(m);
    return;
  }
  if (m.t === "job") runJob(s, m);
  else if (m.t === "paths") s.paths.push(...m.paths);
  else if (m.t === "end") end(s);
};
let ready;
self.onmessage = async (e) => {
  const m = e.data;
  if (m.t === "init") {
    ready = setup(m.addons).then(
      () => { self.postMessage({ t: "ready", ok: true }); return true; },
      (err) => { self.postMessage({ t: "ready", ok: false, error: String(err?.message ?? err) }); return false; });
    return;
  }
  if (!(await ready)) return;
  if (m.t === "begin") {
    sessions.set(m.id, {
      id: m.id, ctl: new Int32Array(m.ctl), fd: m.fd, slots: m.slots,
      slotBytes: m.slotBytes, paths: [], stalled: -1, held: [],
    });
    return;
  }
  const s = sessions.get(m.id);
  if (s) handle(s, m);
};
`;
