/**
 * Benchmarks the local blob service.
 *
 *   npx -y deno@2.9.6 run -A scripts/bench_castore.ts [--data /tmp/bench] [--phase NAME]
 *
 * Phases (each in its own process, so peak RSS is per phase):
 * - mixed:   write every regular file of DATA/mixed as a blob, then read all back;
 * - bigfile: write DATA/bigfile/big as one blob (streamed), then read it back;
 * - similar: write DATA/similar/a then DATA/similar/b into one store; compare
 *            bytes on disk with the two plain copies.
 * Make the corpora first: python3 /work/shared/bench/make_corpus.py {mixed,bigfile,similar} DATA/<kind>.
 * Files are written --concurrency N at a time (default 8, as the tree
 * ingester overlaps blob closes); blobs are read back one after the other.
 * Prints one JSON line per phase.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { exitWithUsageIfAsked } from "./_usage.ts";

exitWithUsageIfAsked(import.meta.url);

function arg(name: string, dflt: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : dflt;
}

const data = arg("data", "/tmp/bench");
const phase = arg("phase", "");

/** Peak resident set size of this process in MiB (Linux VmHWM; Deno alone is ~60 MiB). */
function peakRssMiB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

async function* walk(dir: string): AsyncGenerator<string> {
  const entries = [];
  for await (const e of Deno.readDir(dir)) entries.push(e);
  entries.sort((a, b) => (a.name < b.name ? -1 : 1));
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory) yield* walk(p);
    else if (e.isFile) yield p;
  }
}

/** Bytes on disk (allocated blocks) under a directory. */
async function diskUsage(dir: string): Promise<number> {
  const out = await new Deno.Command("du", {
    args: ["-sb", "--apparent-size", dir],
    stdout: "piped",
  })
    .output();
  const apparent = Number(new TextDecoder().decode(out.stdout).split("\t")[0]);
  return apparent;
}

const buffers: Uint8Array[] = [];

async function putFile(
  svc: LocalBlobService,
  path: string,
): Promise<[Uint8Array, number]> {
  const f = await Deno.open(path);
  const w = svc.put();
  const buf = buffers.pop() ?? new Uint8Array(1 << 20);
  let n = 0;
  try {
    for (;;) {
      const r = await f.read(buf);
      if (r === null) break;
      await w.write(buf.subarray(0, r));
      n += r;
    }
  } finally {
    f.close();
    buffers.push(buf);
  }
  return [await w.close(), n];
}

/** Files written at once (as the tree ingester overlaps blob closes and their fsyncs). */
const CONCURRENCY = Number(arg("concurrency", "8"));

/** Puts every file under `root`, CONCURRENCY at a time; returns [digests, bytes]. */
async function putTree(
  svc: LocalBlobService,
  root: string,
): Promise<[Uint8Array[], number]> {
  const digests: Uint8Array[] = [];
  let bytes = 0;
  const inflight = new Set<Promise<void>>();
  for await (const p of walk(root)) {
    while (inflight.size >= CONCURRENCY) await Promise.race(inflight);
    const job: Promise<void> = putFile(svc, p).then(([d, n]) => {
      digests.push(d);
      bytes += n;
    }).finally(() => inflight.delete(job));
    inflight.add(job);
  }
  await Promise.all(inflight);
  return [digests, bytes];
}

async function readBlob(svc: LocalBlobService, d: Uint8Array): Promise<number> {
  let n = 0;
  for await (const p of (await svc.read(d))!) n += p.length;
  return n;
}

const mbps = (bytes: number, ms: number) =>
  Math.round(bytes / 1e6 / (ms / 1000));

async function runPhase(name: string): Promise<Record<string, unknown>> {
  const store = await Deno.makeTempDir({ prefix: `bench-castore-${name}-` });
  try {
    const svc = await LocalBlobService.open(store);
    if (name === "mixed" || name === "bigfile") {
      const root = join(data, name);
      let t = performance.now();
      const [digests, bytes] = await putTree(svc, root);
      const files = digests.length;
      const writeMs = performance.now() - t;
      const rssAfterWrite = peakRssMiB();
      const stored = await diskUsage(join(store, "castore"));
      t = performance.now();
      let readBytes = 0;
      for (const d of digests) readBytes += await readBlob(svc, d);
      const readMs = performance.now() - t;
      if (readBytes !== bytes) {
        throw new Error(`read ${readBytes} bytes, wrote ${bytes}`);
      }
      return {
        phase: name,
        files,
        concurrency: CONCURRENCY,
        bytes,
        write_MBps: mbps(bytes, writeMs),
        read_MBps: mbps(bytes, readMs),
        stored_bytes: stored,
        peak_rss_write_MiB: rssAfterWrite,
        peak_rss_MiB: peakRssMiB(),
      };
    }
    if (name === "similar") {
      let plain = 0;
      const after: number[] = [];
      const t = performance.now();
      for (const side of ["a", "b"]) {
        for await (const p of walk(join(data, "similar", side))) {
          plain += (await putFile(svc, p))[1];
        }
        after.push(await diskUsage(join(store, "castore")));
      }
      return {
        phase: name,
        plain_a_plus_b: plain,
        stored_after_a: after[0],
        stored_after_a_and_b: after[1],
        b_added_bytes: after[1] - after[0],
        stored_over_plain: Number((after[1] / plain).toFixed(3)),
        write_MBps: mbps(plain, performance.now() - t),
        peak_rss_MiB: peakRssMiB(),
      };
    }
    throw new Error(`unknown phase ${name}`);
  } finally {
    await Deno.remove(store, { recursive: true });
  }
}

if (phase) {
  console.log(JSON.stringify(await runPhase(phase)));
} else {
  const self = new URL(import.meta.url).pathname;
  for (const p of ["mixed", "bigfile", "similar"]) {
    if (!(await Deno.stat(join(data, p)).catch(() => null))) {
      console.log(
        JSON.stringify({ phase: p, skipped: `no corpus at ${join(data, p)}` }),
      );
      continue;
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        self,
        "--data",
        data,
        "--phase",
        p,
        "--concurrency",
        String(CONCURRENCY),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    Deno.stdout.writeSync(out.stdout);
  }
}
