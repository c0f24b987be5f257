/**
 * `snix nix-daemon -l SOCK --processes N` (lib/daemon/process_group.ts):
 * started processes accept on the same socket; a signature added through
 * one connection shows at once through every other, whichever process
 * serves it; a killed process leaves the others serving; SIGTERM stops
 * every process and removes the socket. The path is added with the real
 * Nix client; the rest speaks the protocol with our client.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { DaemonClient } from "../lib/daemon/client.ts";
import { Op } from "../lib/wire/mod.ts";

const REPO = resolve(new URL("..", import.meta.url).pathname);
const haveNix = new Deno.Command("nix-store", {
  args: ["--version"],
  stdout: "null",
  stderr: "null",
}).outputSync().success;

/** Bun's own binary (not npx, which would not pass signals on). */
const BUN = new TextDecoder().decode(
  new Deno.Command("npx", {
    args: ["-y", "bun@1", "-e", "console.log(process.execPath)"],
    stderr: "null",
  }).outputSync().stdout,
).trim();

/** A daemon of the sources (under Deno or Bun) with its stderr collected. */
function startDaemon(dir: string, processes: number, bun = false) {
  const sock = join(dir, "sock");
  const child = new Deno.Command(bun ? BUN : Deno.execPath(), {
    args: [
      ...(bun ? [] : ["run", "-A"]),
      "cli/main.ts",
      "--data-dir",
      join(dir, "data"),
      "nix-daemon",
      "-l",
      sock,
      "--processes",
      `${processes}`,
      "--log-wire",
    ],
    cwd: REPO,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const d = { child, sock, log: "", done: Promise.resolve() };
  d.done = (async () => {
    for await (
      const c of child.stderr.pipeThrough(new TextDecoderStream())
    ) d.log += c;
  })();
  return d;
}

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !cond(); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(cond(), what);
}

/** The pids of `pid`'s children. */
function childrenOf(pid: number): number[] {
  const o = new Deno.Command("pgrep", {
    args: ["-P", `${pid}`],
    stdout: "piped",
  })
    .outputSync();
  return new TextDecoder().decode(o.stdout).split("\n").filter((l) => l)
    .map(Number);
}

async function sigsOf(sock: string, path: string): Promise<string[]> {
  const c = await DaemonClient.connect(sock, 34);
  try {
    return (await c.queryPathInfo(path))!.sigs;
  } finally {
    c.close();
  }
}

for (const bun of [false, true]) {
  Deno.test({
    name: `nix-daemon --processes 2 under ${
      bun ? "Bun" : "Deno"
    }: both serve; a signature added through one connection shows at once through every other; a killed process leaves the others serving`,
    ignore: !haveNix,
    async fn() {
      const dir = mkdtempSync(join(tmpdir(), "snix-daemon-procs-"));
      const d = startDaemon(dir, 2, bun);
      try {
        await until(
          `daemon did not start: ${d.log}`,
          () => /listening on .*\(2 processes\)/.test(d.log),
        );
        writeFileSync(join(dir, "f"), "served by two processes\n");
        const add = await new Deno.Command("nix-store", {
          args: ["--store", `unix://${d.sock}`, "--add", join(dir, "f")],
          env: { HOME: dir, PATH: Deno.env.get("PATH")! },
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.ok(add.success, new TextDecoder().decode(add.stderr));
        const path = new TextDecoder().decode(add.stdout).trim();

        // Every process caches the PathInfo (connections go to whichever
        // process accepts first: go on until both have served some).
        const both = () =>
          /#\d+ QueryPathInfo/.test(d.log) &&
          /#2:\d+ QueryPathInfo/.test(d.log);
        for (let i = 0; i < 200 && (i < 16 || !both()); i++) {
          assert.deepEqual(await sigsOf(d.sock, path), []);
        }
        await until(`both processes serve: ${d.log.slice(-2000)}`, both);

        const added: string[] = [];
        for (let k = 1; k <= 3; k++) {
          const sig = `key-${k}:${
            btoa(String.fromCharCode(...new Uint8Array(64).fill(k)))
          }`;
          const c = await DaemonClient.connect(d.sock, 34);
          await c.call(Op.AddSignatures, (w) => w.string(path).strings([sig]));
          assert.equal(await c.r.readNumber(), 1);
          c.close();
          added.push(sig);
          for (let i = 0; i < 6; i++) {
            assert.deepEqual(
              (await sigsOf(d.sock, path)).sort(),
              [...added].sort(),
              `connection ${i} after signature ${k}`,
            );
          }
        }

        // A started process killed: one line, and the socket still serves.
        const [started] = childrenOf(d.child.pid);
        assert.ok(started, "a started process");
        Deno.kill(started, "SIGKILL");
        await until(
          `the first process tells: ${d.log}`,
          () => /process 2 \(pid \d+\) ended \(SIGKILL\)/.test(d.log),
        );
        for (let i = 0; i < 4; i++) {
          assert.equal((await sigsOf(d.sock, path)).length, 3);
        }
      } finally {
        d.child.kill("SIGTERM");
        await d.child.status;
        await d.done;
        rmSync(dir, { recursive: true, force: true });
      }
    },
  });
}

Deno.test({
  name:
    "nix-daemon --processes 3: SIGTERM stops every process and removes the socket; a started process stops when the first one is killed",
  ignore: !haveNix,
  async fn() {
    const dir = mkdtempSync(join(tmpdir(), "snix-daemon-procs-"));
    try {
      const d = startDaemon(dir, 3);
      await until(
        `daemon did not start: ${d.log}`,
        () => /\(3 processes\)/.test(d.log),
      );
      const started = childrenOf(d.child.pid);
      assert.equal(started.length, 2, "two started processes");
      d.child.kill("SIGTERM");
      assert.equal((await d.child.status).code, 0);
      await d.done;
      assert.ok(!existsSync(d.sock), "socket removed");
      for (const pid of started) {
        await until(
          `process ${pid} ended`,
          () =>
            !existsSync(`/proc/${pid}/cmdline`) ||
            Deno.readTextFileSync(`/proc/${pid}/stat`).split(" ")[2] === "Z",
        );
      }
      assert.doesNotMatch(d.log, /ended \(/, "no process ended on its own");

      // The first process killed outright: the others see their stdin end.
      const e = startDaemon(dir, 2);
      await until(
        `daemon did not start: ${e.log}`,
        () => /\(2 processes\)/.test(e.log),
      );
      const [other] = childrenOf(e.child.pid);
      e.child.kill("SIGKILL");
      await e.child.status;
      await until(
        `process ${other} stops without the first`,
        () =>
          !existsSync(`/proc/${other}/cmdline`) ||
          Deno.readTextFileSync(`/proc/${other}/stat`).split(" ")[2] === "Z",
      );
      await e.done;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
});
