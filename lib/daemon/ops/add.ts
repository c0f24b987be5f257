/**
 * Additions: AddToStoreNar (inline NAR before 1.21, `STDERR_READ` tunnel in
 * 1.21–1.22, framed from 1.23), AddMultipleToStore (framed: a count, then per
 * path a ValidPathInfo at 1.16 and its NAR), AddToStore (old and 1.25+ forms),
 * AddTextToStore, AddSignatures; AddBuildLog and ImportPaths are parsed and
 * refused. Every NAR is checked against its declared hash and size while it
 * streams; a path is recorded only when its references are valid or arrived
 * earlier in the same batch.
 *
 * @module
 */
import { parseHash } from "../../nix/hash.ts";
import type { StorePath } from "../../nix/store_path.ts";
import type { NixPathInfo } from "../../store/path_info.ts";
import {
  atLeast,
  framedSource,
  Limits,
  narCopy,
  Op,
  parseCaMethodWithAlgo,
  protocolVersion,
  readUnkeyedValidPathInfo,
  readValidPathInfo,
  type UnkeyedValidPathInfo,
  WireReader,
  writeRead,
  writeUnkeyedValidPathInfo,
} from "../../wire/mod.ts";
import {
  type OpContext,
  type OpHandler,
  UnsupportedOpError,
} from "../connection.ts";
import { guarded } from "../guarded_stream.ts";
import {
  type AddMethod,
  DaemonError,
  parsePath,
  type PendingPath,
} from "../store.ts";
import {
  last,
  parsePaths,
  readPathString,
  readPathStrings,
  toWireInfo,
} from "./common.ts";

/** Turns wire fields into Nix's info (throws DaemonError on bad values). */
function toNixInfo(path: string, u: UnkeyedValidPathInfo): NixPathInfo {
  const sp = parsePath(path);
  let narHash;
  try {
    narHash = parseHash(u.narHash, "sha256");
  } catch (e) {
    throw new DaemonError(
      `invalid NAR hash for ${path}: ${(e as Error).message}`,
    );
  }
  return {
    path: sp,
    deriver: u.deriver ? parsePath(u.deriver) : undefined,
    narHash,
    references: parsePaths(u.references),
    registrationTime: u.registrationTime,
    narSize: u.narSize,
    ultimate: false,
    sigs: u.sigs,
    ca: u.ca || undefined,
  };
}

/**
 * Runs `work` over `source`; whatever happens, the rest of `source` is read
 * (so the connection stays in step) before the outcome is reported.
 */
async function consuming<T>(
  source: ReadableStream<Uint8Array>,
  work: (s: ReadableStream<Uint8Array>) => Promise<T>,
): Promise<T> {
  const g = guarded(source);
  let result: T | undefined, failure: unknown, failed = false;
  try {
    result = await work(g.stream);
  } catch (e) {
    failure = e;
    failed = true;
  }
  await g.rest(); // a WireError here (client gone, bad frame) ends the connection
  if (failed) throw failure;
  return result as T;
}

/** A stream of `narSize` bytes fetched with STDERR_READ requests (1.21–1.22). */
function tunnelSource(
  c: OpContext,
  narSize: number,
): ReadableStream<Uint8Array> {
  let left = narSize;
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      if (left === 0 && narSize > 0) return ctl.close();
      const want = narSize > 0 ? Math.min(left, 65536) : 65536;
      writeRead(c.w, want);
      await c.w.flush();
      const data = await c.r.readBytes(want, "tunnelled data");
      if (data.length === 0) return ctl.close();
      left -= data.length;
      ctl.enqueue(data);
    },
  }, { highWaterMark: 0 });
}

const addToStoreNar: OpHandler = async (c) => {
  const path = await readPathString(c.r);
  const u = await readUnkeyedValidPathInfo(c.r, protocolVersion(16)); // always the full form here
  const repair = await c.r.readBool("repair");
  const dontCheckSigs = await c.r.readBool("dontCheckSigs");
  c.note("path", path);
  c.note("narSize", u.narSize);
  c.note("references", u.references.length);
  // Every client is trusted: signatures are kept, not checked; "repair" has
  // nothing to repair in a content-addressed store.
  if (repair) c.note("repair", true);
  if (!dontCheckSigs) c.note("sigsNotChecked", true);
  const work = async (nar: ReadableStream<Uint8Array>) => {
    const info = toNixInfo(path, u);
    c.store.checkWritable(`adding ${path}`);
    if (await c.store.isValid(info.path)) {
      c.note("already", true);
      for await (const _ of nar) { /* drop */ }
      return;
    }
    await c.store.checkReferences(info.path, info.references);
    await c.store.addNar(info, nar);
  };
  if (atLeast(c.version, 23)) {
    const framed = framedSource(c.r, Limits.frame);
    try {
      await consuming(framed.stream, work);
    } finally {
      await framed.drain();
    }
  } else if (atLeast(c.version, 21)) {
    await work(tunnelSource(c, u.narSize));
  } else {
    await consuming(narCopy(c.r), work);
  }
  last(c);
};

const addMultipleToStore: OpHandler = async (c) => {
  await c.r.readBool("repair");
  await c.r.readBool("dontCheckSigs");
  const framed = framedSource(c.r, Limits.frame);
  const added: string[] = [];
  try {
    // The frames are read directly (no stream in between); whatever the
    // work leaves unread, the drain below skips.
    await (async () => {
      const r = new WireReader(framed);
      const count = await r.readNumber("path count", Limits.count);
      c.note("count", count);
      const v16 = protocolVersion(16);
      // Paths whose references were not valid yet: recorded once they are.
      const pending: PendingPath[] = [];
      for (let i = 0; i < count; i++) {
        const wi = await readValidPathInfo(r, v16);
        const nar = r.streamExact(wi.narSize, false, "NAR");
        await consuming(nar, async (s) => {
          const info = toNixInfo(wi.path, wi);
          c.store.checkWritable(`adding ${wi.path}`);
          if (await c.store.isValid(info.path)) {
            for await (const _ of s) { /* drop */ }
            return;
          }
          const pi = await c.store.ingest(info, s);
          pending.push({ info, pathInfo: pi });
          added.push(wi.path);
          await c.store.recordReady(pending);
        });
      }
      await c.store.recordReady(pending);
      if (pending.length > 0) {
        const p = pending[0].info;
        const missing = p.references.find((ref) => !ref.equals(p.path));
        throw new DaemonError(
          `cannot add ${p.path}: its reference ${missing} is not valid and was not in the batch` +
            (pending.length > 1
              ? ` (${pending.length} paths not recorded)`
              : ""),
        );
      }
    })();
  } finally {
    c.note("added", added.length);
    await framed.drain();
  }
  last(c);
};

const addToStore: OpHandler = async (c) => {
  if (atLeast(c.version, 25)) {
    const name = await c.r.readString(Limits.path, "name");
    const camStr = await c.r.readString(
      Limits.string,
      "content-address method",
    );
    const refStrings = await readPathStrings(c.r, "references");
    await c.r.readBool("repair");
    c.note("name", name);
    c.note("method", camStr);
    const framed = framedSource(c.r, Limits.frame);
    let info: NixPathInfo;
    try {
      info = await consuming(framed.stream, async (data) => {
        const { method, algo } = parseCaMethodWithAlgo(camStr); // InvalidValueError: answered, not fatal
        if (method === "git") {
          throw new DaemonError("git hashing is not supported");
        }
        return await c.store.addCa(
          name,
          method,
          algo,
          parsePaths(refStrings),
          data,
        );
      });
    } finally {
      await framed.drain();
    }
    c.note("result", info.path.toString());
    last(c);
    c.w.string(info.path.toString());
    writeUnkeyedValidPathInfo(c.w, c.version, toWireInfo(info));
    return;
  }
  const baseName = await c.r.readString(Limits.path, "name");
  const fixed = await c.r.readBool("fixed");
  const recursive = await c.r.readNumber("recursive");
  let algo = await c.r.readString(Limits.string, "hash algorithm");
  c.note("name", baseName);
  let method: AddMethod = recursive === 1 ? "nar" : "flat";
  if (!fixed) {
    algo = "sha256";
    method = "nar";
  }
  const info = await consuming(narCopy(c.r), async (nar) => {
    if (recursive > 1) {
      throw new DaemonError(`unsupported ingestion method ${recursive}`);
    }
    return await c.store.addCa(baseName, method, algo, [], nar, true);
  });
  last(c);
  c.w.string(info.path.toString());
};

const addTextToStore: OpHandler = async (c) => {
  const name = await c.r.readString(Limits.path, "name");
  const text = await c.r.readBytes(Limits.text, "text");
  const refStrings = await readPathStrings(c.r, "references");
  c.note("name", name);
  c.note("size", text.length);
  const refs: StorePath[] = parsePaths(refStrings);
  const src = new ReadableStream<Uint8Array>({
    start(ctl) {
      if (text.length) ctl.enqueue(text);
      ctl.close();
    },
  });
  const info = await c.store.addCa(name, "text", "sha256", refs, src);
  c.note("result", info.path.toString());
  last(c);
  c.w.string(info.path.toString());
};

const addSignatures: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  const sigs = await c.r.readStrings(Limits.count, Limits.string, "signatures");
  c.note("path", s);
  c.note("sigs", sigs.length);
  await c.store.addSignatures(parsePath(s), sigs);
  last(c);
  c.w.u64(1);
};

const addBuildLog: OpHandler = async (c) => {
  c.note("path", await readPathString(c.r));
  const framed = framedSource(c.r, Limits.frame);
  await framed.drain();
  throw new UnsupportedOpError(
    "AddBuildLog",
    "this daemon keeps no build logs",
  );
};

const importPaths: OpHandler = () => {
  // The old export format arrives through STDERR_READ requests we never send.
  return Promise.reject(
    new UnsupportedOpError(
      "ImportPaths",
      "removed from Nix; use AddMultipleToStore",
    ),
  );
};

/** Addition handlers by op number. */
export const addOps: [number, OpHandler][] = [
  [Op.AddToStoreNar, addToStoreNar],
  [Op.AddMultipleToStore, addMultipleToStore],
  [Op.AddToStore, addToStore],
  [Op.AddTextToStore, addTextToStore],
  [Op.AddSignatures, addSignatures],
  [Op.AddBuildLog, addBuildLog],
  [Op.ImportPaths, importPaths],
];
