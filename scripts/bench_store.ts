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
 * the best of `--runs N` (default 1). Import and export run twice: with
 * `deno run` of the sources and with the single `snix` binary users run
 * (scripts/build.sh: `bun build --compile` here), `--runner deno|bin` for
 * one of them. Usage:
 *   deno run -A scripts/bench_store.ts [--runs N] [--bench-dir /tmp/bench]
 *     [--only import,export,rss,dedup] [--runner deno,bin] [--snix-bin PATH]
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";
import { exitWithUsageIfAsked } from "./_usage.ts";

exitWithUsageIfAsked(import.meta.url);

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

/** What one run of a command cost. */
interface Cost {
  /** Wall-clock seconds. */
  secs: number;
  /** CPU seconds (user + system) of the command and everything it ran. */
  cpu: number;
  /** Peak RSS of the biggest process in it, KiB. */
  rssKiB: number;
  out: string;
}

/** Runs a shell command under /usr/bin/time; returns its costs and stdout. */
function timed(cmd: string): Cost {
  const tf = join(SCRATCH, "time.txt");
  const t = performance.now();
  const r = spawnSync("/usr/bin/time", [
    "-f",
    "%U %S %M",
    "-o",
    tf,
    "bash",
    "-c",
    cmd,
  ], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
  });
  const secs = (performance.now() - t) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  const [u, sy, m] = fs.readFileSync(tf, "utf8").trim().split("\n").pop()!
    .split(" ").map(Number);
  return { secs, cpu: u + sy, rssKiB: m, out: r.stdout.trim() };
}

/** The fastest (by wall clock) of `n` runs. */
function best(n: number, fn: () => Cost): Cost {
  let b: Cost | undefined;
  for (let i = 0; i < n; i++) {
    const c = fn();
    if (!b || c.secs < b.secs) b = c;
  }
  return b!;
}

/** "snix X s (Y MiB/s, Z CPU s)" */
function describe(c: Cost, bytes: number): string {
  return `${c.secs.toFixed(2)} s (${mib(bytes / c.secs)} MiB/s, ${
    c.cpu.toFixed(2)
  } CPU s)`;
}

/** Wall and CPU ratios (theirs / ours: > 1 means snix is faster). */
function ratios(ours: Cost, theirs: Cost): string {
  return `ratio ${(theirs.secs / ours.secs).toFixed(2)}x wall, ${
    (theirs.cpu / ours.cpu).toFixed(2)
  }x CPU`;
}

const snixCmd = (dataDir: string, rest: string) =>
  `cd "${ROOT}" && "${DENO}" run -A --quiet cli/main.ts --data-dir "${dataDir}" ${rest}`;
/** The single binary, as users run it (built into the scratch directory unless --snix-bin). */
const BIN = opt("--snix-bin", "") || join(SCRATCH, "snix");
const binCmd = (dataDir: string, rest: string) =>
  `"${BIN}" --data-dir "${dataDir}" ${rest}`;
/** Which snix runs import and export: `deno run` of the sources, the binary, or both. */
const RUNNERS = opt("--runner", "deno,bin").split(",");
const RUNNER_NAME: Record<string, string> = {
  deno: "deno run",
  bin: "snix binary",
};

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
  if (RUNNERS.includes("bin") && !fs.existsSync(BIN)) {
    execFileSync("bash", [join(ROOT, "scripts/build.sh"), BIN], {
      stdio: ["ignore", "ignore", "inherit"],
    });
  }
  if (ONLY.has("import") || ONLY.has("export")) {
    corpus("mixed", mixed, mixed);
    warm(mixed);
    const narSize = Number(timed(`nix-store --dump "${mixed}" | wc -c`).out);
    const want = timed(`nix-store --dump "${mixed}" | sha256sum`).out;
    let add: Cost | undefined;
    let dump: Cost | undefined;
    for (const runner of RUNNERS) {
      const cmd = runner === "bin" ? binCmd : snixCmd;
      const data = join(SCRATCH, "data");
      let path = "";
      const ours = best(RUNS, () => {
        rm(data);
        const r = timed(cmd(data, `store import "${mixed}"`));
        path = r.out;
        return r;
      });
      add ??= best(RUNS, () => {
        const store = join(SCRATCH, "nixbench");
        rm(store);
        const r = timed(`nix-store --store "${store}" --add "${mixed}"`);
        if (r.out !== path) {
          throw new Error(`store paths differ: snix ${path}, nix ${r.out}`);
        }
        rm(store);
        return r;
      });
      report(
        `import mixed (${mib(narSize)} MiB NAR), ${RUNNER_NAME[runner]}: ` +
          `snix ${describe(ours, narSize)}, ` +
          `nix-store --add ${describe(add, narSize)}; ${
            ratios(ours, add)
          } (target >= 1.0)`,
      );
      if (ONLY.has("export")) {
        if (
          timed(`${cmd(data, `store export ${path}`)} | sha256sum`).out !== want
        ) {
          throw new Error("export differs from nix-store --dump");
        }
        const e1 = best(
          RUNS,
          () => timed(`${cmd(data, `store export ${path}`)} > /dev/null`),
        );
        dump ??= best(
          RUNS,
          () => timed(`nix-store --dump "${mixed}" > /dev/null`),
        );
        report(
          `export mixed, ${RUNNER_NAME[runner]}: snix ${
            describe(e1, narSize)
          }, nix-store --dump ${describe(dump, narSize)}; ` +
            `${ratios(e1, dump)} (target >= 1.0)`,
        );
      }
      rm(data);
    }
  }

  if (ONLY.has("rss")) {
    const big = join(BENCH, "bigfile");
    corpus("bigfile", big, join(big, "big"));
    warm(big);
    const data = join(SCRATCH, "rss");
    rm(data);
    const r = timed(snixCmd(data, `store import "${join(big, "big")}"`));
    report(
      `peak RSS importing a 2 GiB file: ${
        mib(r.rssKiB * 1024)
      } MiB (target < 200 MiB); ` +
        describe(r, 2 ** 31),
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
