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
 * Usage: deno run -A scripts/bench_daemon.ts [--corpus DIR] [--scratch-store DIR]
 *   [--seconds N] [--keep] [--only copy,qpi,nar,cat] [--state DIR] [--rounds N]
 *   [--daemon-args "ARGS"] [--snix-bin PATH] [--runner bin|deno]
 *
 * `--only` runs a subset (the paths are still copied into both daemons first,
 * untimed, when `copy` is not among them); `--state DIR` keeps both daemons'
 * stores in DIR between runs (so `--only qpi` does not copy 1 GiB each time);
 * `--rounds N` repeats the QueryPathInfo, NarFromPath, cat and copy measures N
 * times, alternating which daemon goes first, and reports the best of each
 * (each copy round restarts both daemons on empty stores, also under
 * `--state`). Our daemon runs as users run it: the single `snix` binary
 * (built here with scripts/build.sh unless `--snix-bin` names one);
 * `--runner deno` runs `deno run` of the sources instead, and
 * `--daemon-args` then adds deno flags (e.g. `--cpu-prof --cpu-prof-dir=DIR`).
 *
 * The client of the QueryPathInfo and NarFromPath measures is the same for
 * both daemons: {@linkcode DaemonClient} (lib/daemon/client.ts) in this
 * process, speaking protocol 1.34 (Nix 2.8's own version). Its CPU time is
 * printed next to the rates, so one can see how much of a round trip is the
 * client's own.
 *
 * @module
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { DaemonClient } from "../lib/daemon/client.ts";
import { Op } from "../lib/wire/mod.ts";
import { stopChild } from "../lib/runtime/stop_child.ts";
import { exitWithUsageIfAsked } from "./_usage.ts";

exitWithUsageIfAsked(import.meta.url);

const ROOT = new URL("..", import.meta.url).pathname;
const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const corpus = opt("--corpus", "/tmp/bench/mixed");
const seconds = Number(opt("--seconds", "3"));
const only = new Set(opt("--only", "copy,qpi,nar,cat").split(","));
const rounds = Number(opt("--rounds", "1"));
const daemonArgs = opt("--daemon-args", "").split(" ").filter((a) => a);
const runner = opt("--runner", "bin");
if (runner !== "bin" && runner !== "deno") {
  console.error(`bench_daemon: --runner takes bin or deno, not ${runner}`);
  process.exit(2);
}
const stateDir = opt("--state", "");
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

/** The live child processes of `pid` (/proc/PID/task/TID/children). */
function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      const c = fs.readFileSync(`/proc/${pid}/task/${t}/children`, "utf8");
      for (const x of c.split(" ")) if (x.trim()) out.push(Number(x));
    }
  } catch {
    // gone meanwhile
  }
  return out;
}

/**
 * CPU seconds of a process, its reaped children and its live descendants
 * (/proc/PID/stat utime+stime+cutime+cstime): our daemon's started
 * processes (--processes), the peer's per-connection ones.
 */
function cpuSeconds(pid: number): number {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return 0;
  }
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  return ticks / 100 + // USER_HZ
    childPids(pid).reduce((a, c) => a + cpuSeconds(c), 0);
}

/** The 1, 5 and 15 minute load averages. */
function loadAvg(): string {
  return fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(
    " ",
  );
}

async function waitFor(path: string, what: string) {
  for (let i = 0; i < 300 && !fs.existsSync(path); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!fs.existsSync(path)) {
    throw new Error(`${what} did not start (no ${path})`);
  }
}

/**
 * A minimal blocking worker-protocol client (1.34) for QueryPathInfo rates:
 * CONCURRENCY forked processes, one connection each, ask for the paths
 * round-robin for SECONDS and the total rate is printed. Compiled with the
 * system C compiler; undefined (and the C rows skipped) without one.
 */
function compileQpiClient(dir: string): string | undefined {
  const src = join(dir, "qpi_client.c"), bin = join(dir, "qpi_client");
  fs.writeFileSync(src, QPI_CLIENT_C);
  const r = spawnSync("cc", ["-O2", "-o", bin, src], { encoding: "utf8" });
  if (r.status !== 0) {
    console.error(
      `bench: no C client (${
        r.error?.message ?? r.stderr.trim()
      }); TS client only`,
    );
    return undefined;
  }
  return bin;
}

const QPI_CLIENT_C = String
  .raw`/* A minimal, blocking worker-protocol client (1.34) for QueryPathInfo rates:
   N forked processes, each with its own connection, ask for the given paths
   round-robin for S seconds; prints the total number of answers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static int fd;
static unsigned char rbuf[1 << 16];
static size_t rpos, rlen;

static void die(const char *m) { fprintf(stderr, "qpi_client: %s\n", m); exit(2); }
static void fill(void) {
  ssize_t n = read(fd, rbuf, sizeof rbuf);
  if (n <= 0) die("connection closed");
  rpos = 0; rlen = (size_t)n;
}
static void rd(void *dst, size_t n) {
  unsigned char *d = dst;
  while (n) {
    if (rpos == rlen) fill();
    size_t k = rlen - rpos < n ? rlen - rpos : n;
    if (d) { memcpy(d, rbuf + rpos, k); d += k; }
    rpos += k; n -= k;
  }
}
static uint64_t u64(void) { unsigned char b[8]; rd(b, 8); uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | b[i]; return v; }
static void skipstr(void) { uint64_t n = u64(); if (n > (1 << 20)) die("bad length"); rd(0, (n + 7) & ~7ULL); }
static void wall(const void *p, size_t n) { const char *c = p; while (n) { ssize_t k = write(fd, c, n); if (k <= 0) die("write"); c += k; n -= (size_t)k; } }
static size_t put64(unsigned char *b, uint64_t v) { for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i)); return 8; }
static void stderr_loop(void) {
  for (;;) {
    uint64_t c = u64();
    if (c == 0x616c7473) return;               /* LAST */
    if (c == 0x6f6c6d67) { skipstr(); continue; } /* NEXT */
    die("unexpected stderr message");
  }
}
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
  if (argc < 5) die("usage: qpi_client SOCKET CONCURRENCY SECONDS PATH...");
  int conc = atoi(argv[2]); double secs = atof(argv[3]);
  int npaths = argc - 4; char **paths = argv + 4;
  int pfd[2]; if (pipe(pfd)) die("pipe");
  for (int k = 0; k < conc; k++) {
    if (fork() == 0) {
      struct sockaddr_un a = { .sun_family = AF_UNIX };
      strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
      for (int tries = 0;; tries++) {
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) break;
        close(fd); if (tries > 200) die("connect"); usleep(20000);
      }
      unsigned char b[4096]; size_t n = 0;
      n += put64(b + n, 0x6e697863); wall(b, n);
      if (u64() != 0x6478696f) die("bad magic");
      uint64_t sv = u64(); if ((sv >> 8) != 1 || (sv & 0xff) < 34) die("server too old");
      n = 0; n += put64(b + n, 0x122); n += put64(b + n, 0); n += put64(b + n, 0); wall(b, n);
      skipstr();                                  /* daemon version (1.33+) */
      stderr_loop();
      uint64_t count = 0; double end = now() + secs;
      for (int i = k; now() < end; i++) {
        const char *p = paths[i % npaths]; size_t len = strlen(p);
        n = 0; n += put64(b + n, 26); n += put64(b + n, len);
        memcpy(b + n, p, len); memset(b + n + len, 0, 8); n += (len + 7) & ~(size_t)7;
        wall(b, n);
        stderr_loop();
        if (u64() != 1) die("path not valid");
        skipstr(); skipstr();                     /* deriver, narHash */
        for (uint64_t r = u64(); r; r--) skipstr(); /* references */
        u64(); u64(); u64();                       /* registration time, narSize, ultimate */
        for (uint64_t s = u64(); s; s--) skipstr(); /* sigs */
        skipstr();                                 /* ca */
        count++;
      }
      if (write(pfd[1], &count, sizeof count) != sizeof count) die("pipe write");
      _exit(0);
    }
  }
  close(pfd[1]);
  uint64_t total = 0, c; int got = 0;
  while (read(pfd[0], &c, sizeof c) == sizeof c) { total += c; got++; }
  while (wait(0) > 0) {}
  if (got != conc) die("a client failed");
  printf("%.0f\n", total / secs);
  return 0;
}
`;

if (!fs.existsSync(corpus)) {
  console.error(`bench: creating ${corpus} (once)...`);
  sh(
    `python3 /work/shared/bench/make_corpus.py mixed '${corpus}.tmp' && mv '${corpus}.tmp' '${corpus}'`,
  );
}

const tmp = stateDir || fs.mkdtempSync("/tmp/snix-bench-daemon-");
if (stateDir) {
  fs.mkdirSync(stateDir, { recursive: true });
  for (const f of ["ours.sock", "peer/nix/var/nix/daemon-socket/socket"]) {
    fs.rmSync(join(stateDir, f), { force: true });
  }
  fs.rmSync(join(stateDir, "bin"), { recursive: true, force: true });
}
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
/** The `snix` binary (built afresh into the scratch directory unless given). */
const bin = opt("--snix-bin", "") || join(tmp, "snix");
if (!opt("--snix-bin", "")) {
  execFileSync("bash", [join(ROOT, "scripts/build.sh"), bin], {
    stdio: ["ignore", "ignore", "inherit"],
  });
}

/** Stops the daemons started so far (SIGTERM, then SIGKILL after 3 s) and waits for them. */
async function stopDaemons() {
  await Promise.all(children.splice(0).map((c) => stopChild(c, 3000)));
}

try {
  // The closure, in a scratch chroot store.
  console.error(
    `bench: adding the corpus to ${X} (fast if it is there already)...`,
  );
  const dirs = fs.readdirSync(corpus).sort().map((d) => join(corpus, d));
  // With --state, the list of paths is kept too: `nix-store --add` hashes
  // the whole corpus again on every run.
  const pathsFile = stateDir ? join(stateDir, "paths.txt") : "";
  const paths = pathsFile && fs.existsSync(pathsFile)
    ? fs.readFileSync(pathsFile, "utf8").split("\n")
    : sh(`nix-store --store ${X} --add ${dirs.join(" ")}`).split("\n");
  if (pathsFile) fs.writeFileSync(pathsFile, paths.join("\n"));
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
  const peerWrap = join(tmp, "peer-stdio");
  fs.writeFileSync(
    peerWrap,
    `#!/bin/sh\nexec unshare -m sh -c 'mount --make-rprivate / && mount --bind ${peerNix} /nix && exec nix-daemon "$@"' -- "$@"\n`,
  );
  fs.chmodSync(peerWrap, 0o755);
  const pids: number[] = [];
  /** Starts both daemons (on empty stores with `fresh`: earlier ones are stopped and wiped). */
  const startDaemons = async (fresh: boolean) => {
    if (fresh) {
      await stopDaemons();
      fs.rmSync(ours.data, { recursive: true, force: true });
      fs.rmSync(peerNix, { recursive: true, force: true });
      pids.length = 0;
    }
    fs.mkdirSync(join(peerNix, "var/nix/daemon-socket"), { recursive: true });
    const [exe, ...pre] = runner === "bin"
      ? [bin]
      : [Deno.execPath(), "run", "-A", ...daemonArgs, "cli/main.ts"];
    children.push(
      spawn(exe, [
        ...pre,
        "--data-dir",
        ours.data,
        "nix-daemon",
        "-l",
        ours.sock,
        "--unix-listen-unlink",
      ], {
        cwd: ROOT,
        stdio: ["ignore", "ignore", "inherit"],
      }),
    );
    children.push(
      spawn(peerWrap, [], {
        stdio: ["ignore", "ignore", "ignore"],
        env: { ...process.env, NIX_CONFIG },
      }),
    );
    await waitFor(ours.sock, "snix nix-daemon");
    await waitFor(peer.sock, "nix-daemon");
    pids.push(children[0].pid!, children[1].pid!);
  };
  await startDaemons(false);

  type Row = [string, number, number, string];
  const rows: Row[] = [];

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
  if (!only.has("copy")) {
    // Untimed: the other measures need the paths in both daemons.
    sh(copyCmd(ours.sock));
    sh(copyCmd(peer.sock));
  }
  if (only.has("copy")) {
    // With --rounds N: N copies into fresh stores (both daemons restarted),
    // alternating which goes first; the fastest of each is reported with
    // the daemon CPU of that run.
    let best: [number, number, number, number] = [Infinity, 0, Infinity, 0];
    for (let i = 0; i < rounds; i++) {
      if (i > 0) await startDaemons(true);
      for (const k of i % 2 ? [1, 0] : [0, 1]) {
        const [t, cO, cP] = await cpu(() =>
          timed(copyCmd(k === 0 ? ours.sock : peer.sock))
        );
        if (k === 0 && t < best[0]) best = [t, cO, best[2], best[3]];
        if (k === 1 && t < best[2]) best = [best[0], best[1], t, cP];
      }
      if (rounds > 1) {
        console.error(
          `  copy round ${i + 1}: snix ${
            (totalMiB / best[0]).toFixed(0)
          } MiB/s, nix ${
            (totalMiB / best[2]).toFixed(0)
          } MiB/s (best so far; load ${loadAvg()})`,
        );
      }
    }
    const [copyO, cpuCopyO, copyP, cpuCopyP] = best;
    rows.push([
      `nix copy --to (${totalMiB.toFixed(0)} MiB, ${all.length} paths), MiB/s${
        rounds > 1 ? ` (best of ${rounds})` : ""
      }`,
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
  }

  // 2. QueryPathInfo rate, with two clients: ours in this process (TS, the
  // same code the tests use) and a small blocking C client, compiled here
  // when a C compiler is at hand. The TS client costs ~20-30 µs of CPU per
  // request, as much as either daemon, so at concurrency 16 it is the
  // bottleneck; the C client costs a few µs and shows the daemons.
  const cClient = compileQpiClient(tmp);
  for (const conc of only.has("qpi") ? [1, 16] : []) {
    /** Requests per second, and this client's CPU seconds per request. */
    const tsRate = async (sock: string): Promise<[number, number]> => {
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
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const end = t0 + seconds * 1000;
      await Promise.all(clients.map(async (c, k) => {
        for (let i = k; performance.now() < end; i++) {
          const info = await c.queryPathInfo(all[i % all.length]);
          if (!info) throw new Error("path vanished");
          n++;
        }
      }));
      const s = (performance.now() - t0) / 1000;
      const used = process.cpuUsage(cpu0);
      for (const c of clients) c.close();
      return [n / s, (used.user + used.system) / 1e6 / n];
    };
    const cRate = (sock: string): [number, number] => {
      const r = spawnSync(cClient!, [
        sock,
        String(conc),
        String(seconds),
        ...all,
      ], {
        encoding: "utf8",
      });
      if (r.status !== 0) throw new Error(`qpi client: ${r.stderr}`);
      return [Number(r.stdout.trim()), NaN];
    };
    /** Rate, client CPU per request, daemon CPU per request (k: 0 ours, 1 peer). */
    const measure = async (k: 0 | 1, kind: "ts" | "c") => {
      const sock = k === 0 ? ours.sock : peer.sock;
      const before = cpuSeconds(pids[k]);
      const [rate, client] = kind === "c" ? cRate(sock) : await tsRate(sock);
      await new Promise((res) => setTimeout(res, 300)); // nix-daemon reaps its workers
      const daemon = (cpuSeconds(pids[k]) - before) / (rate * seconds);
      return { rate, client, daemon };
    };
    for (const kind of cClient ? ["c", "ts"] as const : ["ts"] as const) {
      type M = Awaited<ReturnType<typeof measure>>;
      const best: [M, M] = [
        { rate: 0, client: 0, daemon: 0 },
        { rate: 0, client: 0, daemon: 0 },
      ];
      const cpus: [number[], number[]] = [[], []];
      for (let i = 0; i < rounds; i++) {
        // Alternate which daemon goes first, so drift in load hits both alike.
        for (const k of i % 2 ? [1, 0] as const : [0, 1] as const) {
          const m = await measure(k, kind);
          if (m.rate > best[k].rate) best[k] = m;
          cpus[k].push(m.daemon);
        }
        if (rounds > 1) {
          console.error(
            `  qpi ${kind} client c=${conc} round ${i + 1}: snix ${
              best[0].rate.toFixed(0)
            }/s nix ${best[1].rate.toFixed(0)}/s (best so far)`,
          );
        }
      }
      const median = (a: number[]) =>
        [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
      rows.push([
        `QueryPathInfo/s, concurrency ${conc}, ${
          kind === "c" ? "C" : "TS"
        } client${rounds > 1 ? ` (best of ${rounds})` : ""}`,
        best[0].rate,
        best[1].rate,
        "higher",
      ]);
      rows.push([
        `  daemon CPU µs per request${rounds > 1 ? " (median)" : ""}`,
        median(cpus[0]) * 1e6,
        median(cpus[1]) * 1e6,
        "lower",
      ]);
      if (kind === "ts") {
        rows.push([
          "  TS client's own CPU µs per request",
          best[0].client * 1e6,
          best[1].client * 1e6,
          "lower",
        ]);
      }
    }
  }

  if (only.has("nar")) {
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
    // With --rounds N: N fetches each, alternating; the best rate of each
    // is reported, with the least daemon CPU of any fetch.
    let narO = 0, narP = 0, cpuNarO = Infinity, cpuNarP = Infinity;
    for (let i = 0; i < rounds; i++) {
      for (const k of i % 2 ? [1, 0] : [0, 1]) {
        const [rate, cO, cP] = await cpu(() =>
          narRate(k === 0 ? ours.sock : peer.sock)
        );
        if (k === 0) {
          narO = Math.max(narO, rate);
          cpuNarO = Math.min(cpuNarO, cO);
        } else {
          narP = Math.max(narP, rate);
          cpuNarP = Math.min(cpuNarP, cP);
        }
      }
    }
    rows.push([
      `NarFromPath MiB/s (${(biggest.narSize / 2 ** 20).toFixed(0)} MiB NAR)${
        rounds > 1 ? ` (best of ${rounds})` : ""
      }`,
      narO,
      narP,
      "higher",
    ]);
    rows.push(["  daemon CPU seconds for that NAR", cpuNarO, cpuNarP, "lower"]);
  }

  if (only.has("cat")) {
    // 4. nix store cat through ssh-ng (stand-in ssh, --stdio daemons, start-up included).
    fs.mkdirSync(join(tmp, "bin"));
    fs.writeFileSync(
      join(tmp, "bin", "ssh"),
      '#!/bin/sh\nfor last; do :; done\nexec sh -c "$last"\n',
    );
    // Our side is the single `snix` binary here whatever --runner says: its
    // start-up (~0.05 s) is part of every ssh-ng session; `deno run` of the
    // sources would add ~0.5 s of module loading to each.
    fs.writeFileSync(
      join(tmp, "bin", "snix-stdio"),
      `#!/bin/sh\nexec ${bin} --data-dir ${ours.data} nix-daemon --stdio 2>/dev/null\n`,
    );
    fs.chmodSync(join(tmp, "bin", "ssh"), 0o755);
    fs.chmodSync(join(tmp, "bin", "snix-stdio"), 0o755);
    const env = { PATH: `${tmp}/bin:${process.env.PATH}` };
    const file = `${biggest.path}/${bigFile.replace(/^\.\//, "")}`;
    const cat = (program: string) =>
      timed(
        `nix store cat --store 'ssh-ng://localhost?remote-program=${program}' ${file} | cat >/dev/null`,
        env,
      );
    // With --rounds N: alternating, the fastest of each.
    let catO = Infinity, catP = Infinity;
    for (let i = 0; i < rounds; i++) {
      for (const k of i % 2 ? [1, 0] : [0, 1]) {
        if (k === 0) catO = Math.min(catO, cat(`${tmp}/bin/snix-stdio`));
        else catP = Math.min(catP, cat(peerWrap));
      }
    }
    rows.push([
      `nix store cat via ssh-ng, s (${
        (bigFileSize / 2 ** 20).toFixed(1)
      } MiB file, NAR ${(biggest.narSize / 2 ** 20).toFixed(0)} MiB)${
        rounds > 1 ? ` (best of ${rounds})` : ""
      }`,
      catO,
      catP,
      "lower",
    ]);
  }

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
  const hwm = (pid: number): number =>
    Number(
        /VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))
          ?.[1] ?? 0,
      ) / 1024 + childPids(pid).reduce((a, c) => a + hwm(c), 0);
  console.log(
    `peak RSS of snix nix-daemon over the whole run: ${
      hwm(pids[0]).toFixed(0)
    } MiB, summed over its processes (nix-daemon's workers are separate processes)`,
  );
  console.log(
    `(load average at the end: ${loadAvg()}; ${navigator.hardwareConcurrency} CPUs, shared)`,
  );
} finally {
  await stopDaemons();
  if (!args.includes("--keep") && !stateDir) {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
