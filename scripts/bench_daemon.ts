/**
 * nix-daemon benchmark (not a test): `snix nix-daemon` side by side with
 * Debian's `nix-daemon` (Nix 2.8) on the ~1 GiB `mixed` corpus
 * (/work/shared/bench/make_corpus.py, cached at /tmp/bench/mixed).
 *
 * The peer runs in a private mount namespace (`unshare -m`) with a scratch
 * directory bind-mounted on /nix, so it has a real /nix/store to serve NARs
 * from; its socket is reachable from outside through the scratch directory.
 *
 * Measured, for both daemons:
 * - `nix copy --to unix://SOCK` of the closure (41 trees + a text file referring to them);
 * - QueryPathInfo rate with our protocol client, at concurrency 1 and 16;
 * - NarFromPath throughput with our protocol client (raw bytes over the socket);
 * - `nix store cat` of the largest file through `ssh-ng://` (Nix 2.8's `unix://`
 *   store reads NARs from the local /nix/store, so ssh-ng with a stand-in ssh
 *   that runs `--stdio` daemons is how the CLI gets NarFromPath over the wire;
 *   this includes each daemon's start-up).
 *
 * Usage: deno run -A scripts/bench_daemon.ts [--corpus DIR] [--scratch-store DIR] [--seconds N] [--keep]
 *
 * @module
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { DaemonClient } from "../lib/daemon/client.ts";
import { Op } from "../lib/wire/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const corpus = opt("--corpus", "/tmp/bench/mixed");
const seconds = Number(opt("--seconds", "3"));
const NIX_CONFIG = "experimental-features = nix-command\nsubstituters =\n";

function sh(script: string, env: Record<string, string> = {}): string {
  const r = spawnSync("bash", ["-c", script], {
    encoding: "utf8",
    maxBuffer: 1 << 26,
    env: { ...process.env, NIX_CONFIG, ...env },
  });
  if (r.status !== 0) throw new Error(`failed: ${script}\n${r.stderr}`);
  return r.stdout.trim();
}

function timed(script: string, env: Record<string, string> = {}): number {
  const t0 = performance.now();
  sh(script, env);
  return (performance.now() - t0) / 1000;
}

/** CPU seconds of a process and its reaped children (/proc/PID/stat utime+stime+cutime+cstime). */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  return ticks / 100; // USER_HZ
}

async function waitFor(path: string, what: string) {
  for (let i = 0; i < 300 && !fs.existsSync(path); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!fs.existsSync(path)) {
    throw new Error(`${what} did not start (no ${path})`);
  }
}

if (!fs.existsSync(corpus)) {
  console.error(`bench: creating ${corpus} (once)...`);
  sh(
    `python3 /work/shared/bench/make_corpus.py mixed '${corpus}.tmp' && mv '${corpus}.tmp' '${corpus}'`,
  );
}

const tmp = fs.mkdtempSync("/tmp/snix-bench-daemon-");
/** The scratch store holding the corpus: kept between runs (it takes minutes to fill). */
const X = opt("--scratch-store", "/tmp/bench/daemon-x");
const ours = {
  name: "snix",
  sock: join(tmp, "ours.sock"),
  data: join(tmp, "ours"),
};
const peerNix = join(tmp, "peer", "nix");
const peer = {
  name: "nix-daemon 2.8",
  sock: join(peerNix, "var/nix/daemon-socket/socket"),
};
const children: ReturnType<typeof spawn>[] = [];

try {
  // The closure, in a scratch chroot store.
  console.error(
    `bench: adding the corpus to ${X} (fast if it is there already)...`,
  );
  const dirs = fs.readdirSync(corpus).sort().map((d) => join(corpus, d));
  const paths = sh(`nix-store --store ${X} --add ${dirs.join(" ")}`).split(
    "\n",
  );
  const expr = `builtins.toFile "closure" "${
    paths.map((p) => `\${builtins.storePath "${p}"}`).join(" ")
  }"`;
  const top = sh(`nix eval --impure --store ${X} --raw --expr '${expr}'`);
  const all = [...paths, top];
  const sizes = JSON.parse(
    sh(`nix path-info --store ${X} --json ${paths.join(" ")}`),
  ) as { path: string; narSize: number }[];
  const biggest = sizes.sort((a, b) => b.narSize - a.narSize)[0];
  const totalMiB = sizes.reduce((a, s) => a + s.narSize, 0) / 2 ** 20;
  const bigFile = sh(
    `cd ${X}${biggest.path} && find . -type f -printf '%s %p\\n' | sort -n | tail -1`,
  ).split(" ")[1];
  const bigFileSize = fs.statSync(join(X + biggest.path, bigFile)).size;

  // Our daemon, and the peer in its own mount namespace.
  fs.mkdirSync(join(peerNix, "var/nix/daemon-socket"), { recursive: true });
  children.push(
    spawn(Deno.execPath(), [
      "run",
      "-A",
      "cli/main.ts",
      "--data-dir",
      ours.data,
      "nix-daemon",
      "-l",
      ours.sock,
    ], {
      cwd: ROOT,
      stdio: ["ignore", "ignore", "inherit"],
    }),
  );
  const peerWrap = join(tmp, "peer-stdio");
  fs.writeFileSync(
    peerWrap,
    `#!/bin/sh\nexec unshare -m sh -c 'mount --make-rprivate / && mount --bind ${peerNix} /nix && exec nix-daemon "$@"' -- "$@"\n`,
  );
  fs.chmodSync(peerWrap, 0o755);
  children.push(
    spawn(peerWrap, [], {
      stdio: ["ignore", "ignore", "ignore"],
      env: { ...process.env, NIX_CONFIG },
    }),
  );
  await waitFor(ours.sock, "snix nix-daemon");
  await waitFor(peer.sock, "nix-daemon");

  type Row = [string, number, number, string];
  const rows: Row[] = [];

  const pids = [children[0].pid!, children[1].pid!];
  /** Runs f; returns its result and the CPU seconds each daemon spent meanwhile. */
  const cpu = async <T>(
    f: () => Promise<T> | T,
  ): Promise<[T, number, number]> => {
    const before = pids.map(cpuSeconds);
    const r = await f();
    await new Promise((res) => setTimeout(res, 300)); // let nix-daemon reap its workers
    const after = pids.map(cpuSeconds);
    return [r, after[0] - before[0], after[1] - before[1]];
  };

  // 1. nix copy --to.
  const copyCmd = (sock: string) =>
    `nix copy --no-check-sigs --from ${X} --to unix://${sock} ${top}`;
  const [copyO, cpuCopyO] = await cpu(() => timed(copyCmd(ours.sock)));
  const [copyP, , cpuCopyP] = await cpu(() => timed(copyCmd(peer.sock)));
  rows.push([
    `nix copy --to (${totalMiB.toFixed(0)} MiB, ${all.length} paths), MiB/s`,
    totalMiB / copyO,
    totalMiB / copyP,
    "higher",
  ]);
  rows.push([
    "  daemon CPU seconds during that copy",
    cpuCopyO,
    cpuCopyP,
    "lower",
  ]);

  // 2. QueryPathInfo rate.
  for (const conc of [1, 16]) {
    const rate = async (sock: string) => {
      const clients: DaemonClient[] = [];
      // One at a time, with retries: nix-daemon's listen backlog is small (EAGAIN).
      while (clients.length < conc) {
        try {
          clients.push(await DaemonClient.connect(sock, 34));
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      let n = 0;
      const end = performance.now() + seconds * 1000;
      await Promise.all(clients.map(async (c, k) => {
        for (let i = k; performance.now() < end; i++) {
          const info = await c.queryPathInfo(all[i % all.length]);
          if (!info) throw new Error("path vanished");
          n++;
        }
      }));
      for (const c of clients) c.close();
      return n / seconds;
    };
    rows.push([
      `QueryPathInfo/s, concurrency ${conc}`,
      await rate(ours.sock),
      await rate(peer.sock),
      "higher",
    ]);
  }

  // 3. NarFromPath over the socket (raw bytes).
  const narRate = async (sock: string) => {
    const c = await DaemonClient.connect(sock, 34);
    const t0 = performance.now();
    await c.call(Op.NarFromPath, (w) => w.string(biggest.path));
    let left = biggest.narSize;
    while (left > 0) {
      const chunk = await c.r.readSome(left);
      if (!chunk) throw new Error("NAR cut short");
      left -= chunk.length;
    }
    const s = (performance.now() - t0) / 1000;
    c.close();
    return biggest.narSize / 2 ** 20 / s;
  };
  const [narO, cpuNarO] = await cpu(() => narRate(ours.sock));
  const [narP, , cpuNarP] = await cpu(() => narRate(peer.sock));
  rows.push([
    `NarFromPath MiB/s (${(biggest.narSize / 2 ** 20).toFixed(0)} MiB NAR)`,
    narO,
    narP,
    "higher",
  ]);
  rows.push(["  daemon CPU seconds for that NAR", cpuNarO, cpuNarP, "lower"]);

  // 4. nix store cat through ssh-ng (stand-in ssh, --stdio daemons, start-up included).
  fs.mkdirSync(join(tmp, "bin"));
  fs.writeFileSync(
    join(tmp, "bin", "ssh"),
    '#!/bin/sh\nfor last; do :; done\nexec sh -c "$last"\n',
  );
  fs.writeFileSync(
    join(tmp, "bin", "snix-stdio"),
    `#!/bin/sh\ncd ${ROOT} && exec ${Deno.execPath()} run -A cli/main.ts --data-dir ${ours.data} nix-daemon --stdio 2>/dev/null\n`,
  );
  fs.chmodSync(join(tmp, "bin", "ssh"), 0o755);
  fs.chmodSync(join(tmp, "bin", "snix-stdio"), 0o755);
  const env = { PATH: `${tmp}/bin:${process.env.PATH}` };
  const file = `${biggest.path}/${bigFile.replace(/^\.\//, "")}`;
  const catO = timed(
    `nix store cat --store 'ssh-ng://localhost?remote-program=${tmp}/bin/snix-stdio' ${file} | cat >/dev/null`,
    env,
  );
  const catP = timed(
    `nix store cat --store 'ssh-ng://localhost?remote-program=${peerWrap}' ${file} | cat >/dev/null`,
    env,
  );
  rows.push([
    `nix store cat via ssh-ng, s (${
      (bigFileSize / 2 ** 20).toFixed(1)
    } MiB file, NAR ${(biggest.narSize / 2 ** 20).toFixed(0)} MiB)`,
    catO,
    catP,
    "lower",
  ]);

  console.log(
    `\n${"measure".padEnd(62)} ${"snix".padStart(10)} ${
      "nix 2.8".padStart(10)
    }  ratio (snix/nix)`,
  );
  for (const [m, o, p, better] of rows) {
    const digits = Math.abs(o) < 100 ? 2 : 0;
    console.log(
      `${m.padEnd(62)} ${o.toFixed(digits).padStart(10)} ${
        p.toFixed(digits).padStart(10)
      }  ${(o / p).toFixed(2)} (${better} is better)`,
    );
  }
  const hwm = (pid: number) =>
    Number(
      /VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))
        ?.[1] ?? 0,
    ) / 1024;
  console.log(
    `peak RSS of snix nix-daemon over the whole run: ${
      hwm(pids[0]).toFixed(0)
    } MiB (nix-daemon's workers are separate processes)`,
  );
  const load = fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3)
    .join(" ");
  console.log(
    `(load average at the end: ${load}; ${navigator.hardwareConcurrency} CPUs, shared)`,
  );
} finally {
  for (const c of children) c.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 500));
  if (!args.includes("--keep")) {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
