/**
 * FUSE benchmark (run as root): `snix store mount` against the same bytes on
 * local disk and on tmpfs.
 *
 *   npx -y deno@2.9.6 run -A scripts/bench_fuse.ts [--size-mib 1024] [--keep]
 *     [--tree-only | --seq-only] [--repeat N] [--rounds N]
 *     [--mount-flags "..."] [--snix-bin PATH]
 *
 * - sequential read of one big file (`make_corpus.py bigfile`), cold (caches
 *   dropped, fresh mount) and warm (page cache), with `dd bs=1M`;
 * - `find -ls` and `tar c | wc -c` of the ~50k-entry tree (`make_corpus.py small`);
 * - 8 parallel readers, each reading its own eighth of the big file, cold and warm.
 *
 * `--tree-only` runs only the tree part, `--seq-only` only the sequential
 * read of the big file. `--rounds N` measures the cold sequential read N
 * times (disk and a fresh mount interleaved) and reports the best of each.
 * `--snix-bin PATH` mounts with that binary (scripts/build.sh) instead of
 * `deno run cli/main.ts`. The VM's steal time (ticks of /proc/stat) during
 * the run is printed at the end (> 300: a noisy run). `--repeat N` measures each cold
 * tree figure N times (native and FUSE interleaved: drop caches, native
 * walk; drop caches, fresh mount, FUSE walk) and reports the best; every
 * run is printed, so the spread shows the noise. Cold means the same thing
 * on both sides: the page, dentry and inode caches are dropped right before
 * the walk, so the native walk reads its inodes and directories from disk
 * and the FUSE walk reads the data directory's files from disk (the mount
 * process itself is started before the timer, after the drop). Each fresh
 * run also shows the CPU time the mount process spent during the walk (less
 * disturbed by other jobs on a shared machine than the wall time).
 *
 * The store is a local data directory under /tmp/bench (imported once with
 * `snix store import`, then reused). Cold runs write to
 * /proc/sys/vm/drop_caches (global, harmless, slows other work briefly).
 * Prints a table and the figures as JSON.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { exitWithUsageIfAsked } from "./_usage.ts";

exitWithUsageIfAsked(import.meta.url);

const ROOT = new URL("..", import.meta.url).pathname;
const BENCH = "/tmp/bench";
const args = process.argv.slice(2);
const sizeMib = Number(args[args.indexOf("--size-mib") + 1] || 1024) || 1024;
const treeOnly = args.includes("--tree-only");
const seqOnly = args.includes("--seq-only");
const rounds = args.includes("--rounds")
  ? Math.max(1, Number(args[args.indexOf("--rounds") + 1]) || 1)
  : 1;
const snixBin = args.includes("--snix-bin")
  ? args[args.indexOf("--snix-bin") + 1]
  : undefined;
const repeat = args.includes("--repeat")
  ? Math.max(1, Number(args[args.indexOf("--repeat") + 1]) || 1)
  : 1;
const mountFlags = args.includes("--mount-flags")
  ? args[args.indexOf("--mount-flags") + 1].split(/\s+/).filter((a) => a)
  : [];
const BIG_DIR = sizeMib === 1024 ? `${BENCH}/big1g` : `${BENCH}/big${sizeMib}m`;
const BIG = `${BIG_DIR}/big`;
const SMALL = `${BENCH}/small`;
const DATA = `${BENCH}/snix-fuse-data`;
const MNT = `${BENCH}/fuse-mnt`;
const TMPFS = `${BENCH}/fuse-tmpfs`;
// Run deno directly (not through npx) so that signals reach the mount process.
const SNIX = snixBin ? [snixBin, "--data-dir", DATA] : [
  Deno.execPath(),
  "run",
  "-A",
  `${ROOT}cli/main.ts`,
  "--data-dir",
  DATA,
];

/** The VM's steal time so far (ticks, /proc/stat). */
function steal(): number {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0].split(/\s+/);
  return Number(cpu[8]);
}

async function sh(script: string): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (out.code !== 0) {
    throw new Error(`\`${script}\` failed: ${dec.decode(out.stderr).trim()}`);
  }
  return dec.decode(out.stdout);
}

/** Seconds a shell command takes. */
async function timed(script: string): Promise<number> {
  const t0 = performance.now();
  await sh(script);
  return (performance.now() - t0) / 1000;
}

/** The best of `n` runs (warm figures: other processes on a shared machine may drop caches). */
async function best(script: string, n = 3): Promise<number> {
  let b = Infinity;
  for (let i = 0; i < n; i++) b = Math.min(b, await timed(script));
  return b;
}

/** Seconds to read the whole blob of `storePath` (a single file) straight from the data dir. */
async function backendRead(storePath: string): Promise<number> {
  const { LocalBlobService } = await import(
    "../lib/castore/local_blob_service.ts"
  );
  const { LocalPathInfoService } = await import(
    "../lib/store/local_path_info_service.ts"
  );
  const { StorePath } = await import("../lib/nix/store_path.ts");
  const blobs = await LocalBlobService.open(DATA);
  const infos = await LocalPathInfoService.open(DATA);
  const e = (await infos.get(StorePath.parse(storePath).digest))?.entry?.entry;
  if (e?.case !== "file") throw new Error(`${storePath} is not a single file`);
  const t0 = performance.now();
  const stream = await blobs.read(e.value.digest);
  for await (const _ of stream!) { /* consume */ }
  const t = (performance.now() - t0) / 1000;
  await blobs.close?.();
  return t;
}

async function dropCaches(): Promise<void> {
  await sh("sync; echo 3 > /proc/sys/vm/drop_caches");
}

function mounted(path: string): boolean {
  return readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) =>
    l.split(" ")[4] === path
  );
}

async function snix(...a: string[]): Promise<string> {
  const out = await new Deno.Command(SNIX[0], {
    args: [...SNIX.slice(1), ...a],
    stdout: "piped",
    stderr: "inherit",
  })
    .output();
  if (out.code !== 0) throw new Error(`snix ${a.join(" ")} failed`);
  return new TextDecoder().decode(out.stdout).trim();
}

/** The mount process of the last {@linkcode mount}. */
let mountPid = 0;

/**
 * CPU seconds (user + system, all threads) process `pid` has used: the
 * mount's own cost of a walk, which other jobs on a shared machine disturb
 * less than the wall time.
 */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in ticks
}

/** Starts `snix store mount`, waits until mounted; returns a stopper. */
async function mount(): Promise<() => Promise<void>> {
  mkdirSync(MNT, { recursive: true });
  const child = new Deno.Command(SNIX[0], {
    args: [
      ...SNIX.slice(1),
      "--log-level",
      "warning",
      "store",
      "mount",
      ...mountFlags,
      MNT,
    ],
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  mountPid = child.pid;
  const t0 = Date.now();
  while (!mounted(MNT)) {
    if (Date.now() - t0 > 30000) {
      throw new Error("mount did not appear within 30 s");
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // The first stat waits for INIT.
  await sh(`stat ${MNT} >/dev/null`);
  return async () => {
    child.kill("SIGTERM");
    await child.status;
  };
}

async function importOnce(src: string, name: string): Promise<string> {
  const cache = `${DATA}/bench-paths.json`;
  const known: Record<string, string> = existsSync(cache)
    ? JSON.parse(readFileSync(cache, "utf8"))
    : {};
  if (known[src]) return known[src];
  console.error(`importing ${src} into ${DATA} ...`);
  const t = performance.now();
  const path = await snix("store", "import", "--name", name, src);
  console.error(`  ${path} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
  known[src] = path;
  writeFileSync(cache, JSON.stringify(known, null, 2));
  return path;
}

const results: Record<string, number> = {};
function record(key: string, seconds: number, bytes?: number) {
  results[key] = Number(seconds.toFixed(3));
  const rate = bytes ? `  ${(bytes / seconds / 1e6).toFixed(0)} MB/s` : "";
  console.log(`${key.padEnd(36)} ${seconds.toFixed(2).padStart(7)} s${rate}`);
}

async function main() {
  if (process.getuid?.() !== 0) {
    throw new Error("bench_fuse needs root (mount, drop_caches)");
  }
  console.log(
    `load average at start: ${readFileSync("/proc/loadavg", "utf8").trim()}`,
  );
  const steal0 = steal();
  if (snixBin) console.log(`mounting with ${snixBin}`);
  mkdirSync(BENCH, { recursive: true });
  if (!existsSync(BIG)) {
    await sh(
      `python3 /work/shared/bench/make_corpus.py bigfile ${BIG_DIR} --size-mib ${sizeMib}`,
    );
  }
  if (!existsSync(SMALL)) {
    await sh(`python3 /work/shared/bench/make_corpus.py small ${SMALL}`);
  }
  const bigPath = treeOnly ? "" : await importOnce(BIG, "big");
  const smallPath = await importOnce(SMALL, "small");
  const bigBytes = sizeMib << 20;
  const fuseBig = `${MNT}/${bigPath.slice("/nix/store/".length)}`;
  const fuseSmall = `${MNT}/${smallPath.slice("/nix/store/".length)}`;

  mkdirSync(TMPFS, { recursive: true });
  if (!mounted(TMPFS)) {
    await sh(`mount -t tmpfs -o size=${sizeMib + 256}m tmpfs ${TMPFS}`);
  }
  let stop: (() => Promise<void>) | undefined;
  try {
    await sh(
      treeOnly
        ? `rm -rf ${TMPFS}/small && cp -a ${SMALL} ${TMPFS}/small`
        : `rm -rf ${TMPFS}/small && cp ${BIG} ${TMPFS}/big && cp -a ${SMALL} ${TMPFS}/small`,
    );
    const dd = (f: string) => `dd if=${f} of=/dev/null bs=1M status=none`;
    const par = (f: string) =>
      Array.from({ length: 8 }, (_, i) => {
        const n = sizeMib / 8;
        return `dd if=${f} of=/dev/null bs=1M skip=${
          i * n
        } count=${n} status=none &`;
      }).join(" ") + " wait";

    if (!treeOnly) {
      console.log(`--- sequential read of a ${sizeMib} MiB file (dd bs=1M)`);
      const diskCold: number[] = [];
      const fuseCold: number[] = [];
      const fuseCpu: number[] = [];
      for (let i = 0; i < rounds; i++) {
        await dropCaches();
        diskCold.push(await timed(dd(BIG)));
        await dropCaches();
        stop = await mount();
        const c0 = cpuSeconds(mountPid);
        fuseCold.push(await timed(dd(fuseBig)));
        fuseCpu.push(cpuSeconds(mountPid) - c0);
        if (i < rounds - 1) {
          await stop();
          stop = undefined;
        }
      }
      const show = (a: number[]) => a.map((t) => t.toFixed(2)).join(" ");
      console.log(
        `  cold runs: disk ${show(diskCold)} / fuse ${show(fuseCold)}` +
          ` (mount process CPU ${show(fuseCpu)} s)`,
      );
      record("fuse cold", Math.min(...fuseCold), bigBytes);
      record("fuse warm", await best(dd(fuseBig)), bigBytes);
      await stop!();
      stop = undefined;
      record("disk cold", Math.min(...diskCold), bigBytes);
      record("disk warm", await best(dd(BIG)), bigBytes);
      record("tmpfs", await best(dd(`${TMPFS}/big`)), bigBytes);
      await dropCaches();
      record("backend alone cold", await backendRead(bigPath), bigBytes);
    }
    if (!treeOnly && !seqOnly) {
      console.log("--- 8 parallel readers, one eighth of the file each");
      await dropCaches();
      record("disk 8x cold", await timed(par(BIG)), bigBytes);
      record("disk 8x warm", await best(par(BIG)), bigBytes);
      await dropCaches();
      stop = await mount();
      record("fuse 8x cold", await timed(par(fuseBig)), bigBytes);
      record("fuse 8x warm", await best(par(fuseBig)), bigBytes);
      await stop();
      stop = undefined;
    }

    if (!seqOnly) console.log("--- the ~50k-entry tree");
    const find = (d: string) => `find ${d} -ls > /dev/null`;
    const tar = (d: string) => `tar c -C ${d} . | wc -c > /dev/null`;
    const walks: [string, (d: string) => string][] = [
      ["find -ls", find],
      ["tar c | wc -c", tar],
    ];
    if (seqOnly) walks.length = 0;
    for (const [label, cmd] of walks) {
      // Native cold and FUSE fresh-mount runs interleaved, so a busy spell
      // on the shared machine hits both sides alike.
      const disk: number[] = [];
      const fresh: number[] = [];
      const cpu: number[] = [];
      for (let i = 0; i < repeat; i++) {
        await dropCaches();
        disk.push(await timed(cmd(SMALL)));
        await dropCaches();
        stop = await mount();
        const c0 = cpuSeconds(mountPid);
        fresh.push(await timed(cmd(fuseSmall)));
        cpu.push(cpuSeconds(mountPid) - c0);
        if (i < repeat - 1) {
          await stop();
          stop = undefined;
        }
      }
      const show = (a: number[]) => a.map((t) => t.toFixed(2)).join(" ");
      console.log(
        `  runs: disk ${show(disk)} / fuse ${show(fresh)}` +
          ` (mount process CPU ${show(cpu)} s)`,
      );
      record(`fuse ${label} (fresh mount)`, Math.min(...fresh));
      record(`fuse ${label} (again)`, await best(cmd(fuseSmall)));
      if (label === "tar c | wc -c") {
        const norm =
          "--sort=name --owner=0 --group=0 --numeric-owner --mtime=@1 --mode=a-w";
        const same =
          (await sh(`tar c ${norm} -C ${fuseSmall} . | sha256sum`)) ===
            (await sh(`tar c ${norm} -C ${SMALL} . | sha256sum`));
        console.log(
          `(tar of the mount ${
            same ? "equals" : "differs from"
          } tar of the original with owner/mtime/mode normalised)`,
        );
      }
      await stop!();
      stop = undefined;
      record(`disk ${label} (cold)`, Math.min(...disk));
      record(`disk ${label} (warm)`, await best(cmd(SMALL)));
      record(`tmpfs ${label}`, await best(cmd(`${TMPFS}/small`)));
    }

    const r = results;
    const x = (a: string, b: string) => (r[a] / r[b]).toFixed(2);
    console.log("--- ratios");
    if (!treeOnly) {
      console.log(
        `seq read speed vs native: warm ${
          x("disk warm", "fuse warm")
        }x of disk, ${
          x("tmpfs", "fuse warm")
        }x of tmpfs (target >= 0.9); cold ${
          x("disk cold", "fuse cold")
        }x of disk (target >= 0.5), ${
          x("backend alone cold", "fuse cold")
        }x of the backend alone`,
      );
      if (!seqOnly) {
        console.log(
          `8 readers speed vs native: warm ${
            x("disk 8x warm", "fuse 8x warm")
          }x, cold ${x("disk 8x cold", "fuse 8x cold")}x`,
        );
      }
    }
    if (!seqOnly) {
      console.log(
        `find -ls time vs native (target <= 2): fresh mount ${
          x("fuse find -ls (fresh mount)", "disk find -ls (cold)")
        }x of disk cold, again ${
          x("fuse find -ls (again)", "disk find -ls (warm)")
        }x of disk warm`,
      );
      console.log(
        `tar c time vs native (target <= 2): fresh mount ${
          x("fuse tar c | wc -c (fresh mount)", "disk tar c | wc -c (cold)")
        }x of disk cold, again ${
          x("fuse tar c | wc -c (again)", "disk tar c | wc -c (warm)")
        }x of disk warm`,
      );
    }
    console.log(
      `load average at end: ${readFileSync("/proc/loadavg", "utf8").trim()}`,
    );
    console.log(`steal during the run: ${steal() - steal0} ticks`);
    console.log(JSON.stringify(results));
  } finally {
    if (stop) await stop();
    if (mounted(MNT)) await sh(`umount -l ${MNT}`).catch(() => {});
    if (!args.includes("--keep")) {
      await sh(`umount ${TMPFS} || umount -l ${TMPFS}`).catch(() => {});
    }
  }
}

await main();
