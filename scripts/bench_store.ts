/**
 * Store benchmarks, each side by side with Nix 2.8 on the same bytes
 * (corpora from /work/shared/bench/make_corpus.py, made if missing):
 *
 * - import throughput: `snix store import` of the 1 GiB mixed corpus vs
 *   `nix-store --store <scratch> --add` (target ratio >= 1.0);
 * - export throughput: `snix store export` vs `nix-store --dump` (>= 1.0);
 * - peak RSS of `snix store import` of a 2 GiB single file (< 200 MiB);
 * - dedup: bytes on disk after importing similar/a and similar/b vs the two
 *   plain trees (target <= 0.6).
 *
 * Each command runs as its own process (page cache warmed first); times are
 * the best of `--runs N` (default 1). Usage:
 *   deno run -A scripts/bench_store.ts [--runs N] [--bench-dir /tmp/bench] [--only import,export,rss,dedup]
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";

const args = Deno.args;
const opt = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
};
const RUNS = Number(opt("--runs", "1"));
const BENCH = opt("--bench-dir", "/tmp/bench");
const ONLY = new Set(opt("--only", "import,export,rss,dedup").split(","));
const ROOT = new URL("..", import.meta.url).pathname;
const DENO = Deno.execPath();
const CORPUS = "/work/shared/bench/make_corpus.py";
const SCRATCH = fs.mkdtempSync("/tmp/snix-bench-store-");

function corpus(kind: string, dir: string, check: string): void {
  if (fs.existsSync(check)) return;
  console.error(`making ${kind} corpus in ${dir} ...`);
  execFileSync("python3", [CORPUS, kind, dir], { stdio: "inherit" });
}

function warm(path: string): void {
  spawnSync("bash", [
    "-c",
    `find "${path}" -type f -print0 | xargs -0 cat > /dev/null`,
  ]);
}

/** Runs a shell command; returns seconds and stdout. */
function timed(cmd: string): { secs: number; out: string } {
  const t = performance.now();
  const r = spawnSync("bash", ["-c", cmd], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
  });
  const secs = (performance.now() - t) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return { secs, out: r.stdout.trim() };
}

function best(n: number, fn: () => number): number {
  let b = Infinity;
  for (let i = 0; i < n; i++) b = Math.min(b, fn());
  return b;
}

const snixCmd = (dataDir: string, rest: string) =>
  `cd "${ROOT}" && "${DENO}" run -A --quiet cli/main.ts --data-dir "${dataDir}" ${rest}`;

function duBytes(...paths: string[]): number {
  const out = execFileSync("du", ["-s", "--block-size=1", "-c", ...paths], {
    encoding: "utf8",
  });
  return Number(out.trim().split("\n").pop()!.split(/\s+/)[0]);
}

function rm(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}

const mib = (b: number) => (b / (1 << 20)).toFixed(1);
const results: string[] = [];
function report(line: string): void {
  console.log(line);
  results.push(line);
}

try {
  const mixed = join(BENCH, "mixed");
  if (ONLY.has("import") || ONLY.has("export")) {
    corpus("mixed", mixed, mixed);
    warm(mixed);
    const narSize = Number(timed(`nix-store --dump "${mixed}" | wc -c`).out);
    const data = join(SCRATCH, "data");
    let path = "";
    const ours = best(RUNS, () => {
      rm(data);
      const r = timed(snixCmd(data, `store import "${mixed}"`));
      path = r.out;
      return r.secs;
    });
    const theirs = best(RUNS, () => {
      const store = join(SCRATCH, "nixbench");
      rm(store);
      const r = timed(`nix-store --store "${store}" --add "${mixed}"`);
      if (r.out !== path) {
        throw new Error(`store paths differ: snix ${path}, nix ${r.out}`);
      }
      rm(store);
      return r.secs;
    });
    report(
      `import mixed (${mib(narSize)} MiB NAR): snix ${ours.toFixed(2)} s (${
        mib(narSize / ours)
      } MiB/s), ` +
        `nix-store --add ${theirs.toFixed(2)} s (${
          mib(narSize / theirs)
        } MiB/s); ratio ${(theirs / ours).toFixed(2)}x (target >= 1.0)`,
    );
    if (ONLY.has("export")) {
      const sum = (cmd: string) =>
        timed(`${cmd} | sha256sum`).out.split(" ")[0];
      if (
        sum(snixCmd(data, `store export ${path}`)) !==
          sum(`nix-store --dump "${mixed}"`)
      ) {
        throw new Error("export differs from nix-store --dump");
      }
      const e1 = best(
        RUNS,
        () =>
          timed(`${snixCmd(data, `store export ${path}`)} > /dev/null`).secs,
      );
      const e2 = best(
        RUNS,
        () => timed(`nix-store --dump "${mixed}" > /dev/null`).secs,
      );
      report(
        `export mixed: snix ${e1.toFixed(2)} s (${
          mib(narSize / e1)
        } MiB/s), nix-store --dump ${e2.toFixed(2)} s ` +
          `(${mib(narSize / e2)} MiB/s); ratio ${
            (e2 / e1).toFixed(2)
          }x (target >= 1.0)`,
      );
    }
    rm(data);
  }

  if (ONLY.has("rss")) {
    const big = join(BENCH, "bigfile");
    corpus("bigfile", big, join(big, "big"));
    warm(big);
    const data = join(SCRATCH, "rss");
    rm(data);
    // peak RSS of the child as getrusage reports it (KiB on Linux)
    const r = spawnSync("/usr/bin/python3", [
      "-c",
      "import resource,subprocess,sys,time; t=time.time(); r=subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); " +
      "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.time()-t)",
      DENO,
      "run",
      "-A",
      "--quiet",
      join(ROOT, "cli/main.ts"),
      "--data-dir",
      data,
      "store",
      "import",
      join(big, "big"),
    ], { encoding: "utf8" });
    const [code, kib, secs] = r.stdout.trim().split(" ").map(Number);
    if (code !== 0) {
      throw new Error(`import of the big file failed: ${r.stderr}`);
    }
    report(
      `peak RSS importing a 2 GiB file: ${
        mib(kib * 1024)
      } MiB (target < 200 MiB), ${secs.toFixed(1)} s (${
        mib(2 ** 31 / secs)
      } MiB/s)`,
    );
    rm(data);
  }

  if (ONLY.has("dedup")) {
    const sim = join(BENCH, "similar");
    corpus("similar", sim, join(sim, "b"));
    const data = join(SCRATCH, "dedup");
    rm(data);
    timed(
      snixCmd(data, `store import "${join(sim, "a")}" "${join(sim, "b")}"`),
    );
    const ours = duBytes(data);
    const plain = duBytes(join(sim, "a"), join(sim, "b"));
    report(
      `dedup similar/a + similar/b: ${mib(ours)} MiB on disk vs ${
        mib(plain)
      } MiB plain; ratio ${(ours / plain).toFixed(2)}x (target <= 0.6)`,
    );
    rm(data);
  }
} finally {
  rm(SCRATCH);
}
