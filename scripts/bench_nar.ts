/**
 * NAR benchmark (not a test): `snix nar dump` / `snix nar hash` against
 * `nix-store --dump` / `nix hash path` on the 1 GiB `mixed` corpus
 * (/work/shared/bench/make_corpus.py, created once and cached by path).
 *
 * Each command runs as `CMD | cat >/dev/null` (a real pipe, like `| xz`),
 * under /usr/bin/time for wall time and peak RSS; the best of N runs counts.
 * Prints seconds, MB/s, peak RSS and the ratio nix/snix (>= 1.0 means as
 * fast as Nix).
 *
 * Usage: deno run -A scripts/bench_nar.ts [--runs N] [--corpus DIR] [--build]
 * [--bin PATH] (the binary to measure, built there if missing or with --build;
 * default ./snix)
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { exitWithUsageIfAsked } from "./_usage.ts";

exitWithUsageIfAsked(import.meta.url);

const ROOT = new URL("..", import.meta.url).pathname;
const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const runs = Number(opt("--runs", "3"));
const corpus = opt("--corpus", "/tmp/bench/mixed");
const bin = opt("--bin", join(ROOT, "snix"));

function sh(
  script: string,
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync("bash", ["-c", script], {
    encoding: "utf8",
    maxBuffer: 1 << 26,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

if (!fs.existsSync(corpus)) {
  console.error(`bench: creating ${corpus} (once)...`);
  const tmp = `${corpus}.tmp-${process.pid}`;
  const r = sh(
    `python3 /work/shared/bench/make_corpus.py mixed '${tmp}' && mv '${tmp}' '${corpus}'`,
  );
  if (r.status !== 0) throw new Error(`make_corpus failed: ${r.stderr}`);
}
if (args.includes("--build") || !fs.existsSync(bin)) {
  const r = sh(`cd '${ROOT}' && bash scripts/build.sh '${bin}'`);
  if (r.status !== 0) throw new Error(`build failed: ${r.stderr}`);
}
const du = sh(`du -sb '${corpus}' | cut -f1`).stdout.trim();
const deno = process.execPath;
const denoRun = `'${deno}' run -A --no-check '${join(ROOT, "cli/main.ts")}'`;

interface Result {
  seconds: number;
  /** user + system CPU seconds (steadier than wall time on a shared machine). */
  cpu: number;
  rssMiB: number;
  output: string;
}

/** Best of `runs`: wall seconds and peak RSS of CMD (output piped through cat). */
function measure(cmd: string, pipeToCat: boolean): Result {
  let best: Result | undefined;
  for (let i = 0; i < runs; i++) {
    const timeFile = `/tmp/bench-nar-time-${process.pid}`;
    const out = pipeToCat ? "| cat >/dev/null" : "";
    const r = sh(
      `set -o pipefail; /usr/bin/time -f '%e %M %U %S' -o ${timeFile} ${cmd} ${out}`,
    );
    if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
    const [e, m, u, sy] = fs.readFileSync(timeFile, "utf8").trim().split("\n")
      .pop()!
      .split(" ");
    fs.rmSync(timeFile, { force: true });
    const res = {
      seconds: Number(e),
      cpu: Number(u) + Number(sy),
      rssMiB: Number(m) / 1024,
      output: r.stdout.trim(),
    };
    if (!best || res.seconds < best.seconds) best = res;
  }
  return best!;
}

const narSize = Number(
  sh(`nix-store --dump '${corpus}' | wc -c`).stdout.trim(),
);
const rows: [string, Result][] = [];
const row = (name: string, r: Result) => {
  rows.push([name, r]);
  const mbs = narSize / 1e6 / Math.max(r.seconds, 0.001);
  console.log(
    `${name.padEnd(28)} ${r.seconds.toFixed(2).padStart(6)} s ${
      mbs.toFixed(0).padStart(6)
    } MB/s ${r.rssMiB.toFixed(0).padStart(5)} MiB RSS ${
      r.cpu.toFixed(2).padStart(6)
    } s CPU`,
  );
  return r;
};

console.log(
  `corpus ${corpus}: ${
    (Number(du) / 2 ** 30).toFixed(2)
  } GiB on disk, NAR ${narSize} bytes, best of ${runs}`,
);
const nixDump = row(
  "nix-store --dump",
  measure(`nix-store --dump '${corpus}'`, true),
);
const binDump = row(
  "snix nar dump (binary)",
  measure(`'${bin}' nar dump '${corpus}'`, true),
);
const denoDump = row(
  "snix nar dump (deno run)",
  measure(`${denoRun} nar dump '${corpus}'`, true),
);
const nixHash = row(
  "nix hash path",
  measure(
    `nix --extra-experimental-features nix-command hash path '${corpus}'`,
    false,
  ),
);
const binHash = row(
  "snix nar hash --sri (binary)",
  measure(`'${bin}' nar hash --sri '${corpus}'`, false),
);
const denoHash = row(
  "snix nar hash --sri (deno)",
  measure(`${denoRun} nar hash --sri '${corpus}'`, false),
);
if (binHash.output !== nixHash.output || denoHash.output !== nixHash.output) {
  throw new Error(
    `hash mismatch: nix ${nixHash.output}, binary ${binHash.output}, deno ${denoHash.output}`,
  );
}
// Reading: list the whole NAR (nix nar ls loads the NAR into memory).
const narFile = `${corpus}.nar`;
if (!fs.existsSync(narFile)) {
  sh(
    `nix-store --dump '${corpus}' > '${narFile}.tmp' && mv '${narFile}.tmp' '${narFile}'`,
  );
}
const nixLs = row(
  "nix nar ls -R",
  measure(
    `nix --extra-experimental-features nix-command nar ls -R '${narFile}' /`,
    true,
  ),
);
const binLs = row(
  "snix nar ls (binary)",
  measure(`'${bin}' nar ls '${narFile}'`, true),
);
const ratio = (nix: Result, ours: Result) =>
  `${(nix.seconds / ours.seconds).toFixed(2)} (CPU ${
    (nix.cpu / ours.cpu).toFixed(2)
  })`;
console.log("ratios nix/snix, wall (CPU); >= 1.0 is as fast as Nix:");
console.log(
  `  dump binary ${ratio(nixDump, binDump)}, dump deno ${
    ratio(nixDump, denoDump)
  }`,
);
console.log(
  `  hash binary ${ratio(nixHash, binHash)}, hash deno ${
    ratio(nixHash, denoHash)
  }`,
);
console.log(`  nar ls binary ${ratio(nixLs, binLs)}`);
const maxRss = Math.max(
  binDump.rssMiB,
  denoDump.rssMiB,
  binHash.rssMiB,
  denoHash.rssMiB,
  binLs.rssMiB,
);
console.log(`peak RSS of snix: ${maxRss.toFixed(0)} MiB (target < 100 MiB)`);
