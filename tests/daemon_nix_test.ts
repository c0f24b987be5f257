/**
 * `snix nix-daemon` against the real Nix 2.8 client. Nix 2.8's `unix://`
 * store reads NARs from the local /nix/store itself (UDSRemoteStore inherits
 * LocalFSStore::narFromPath), so everything that needs NAR bytes from the
 * daemon goes through `ssh-ng://` with a stand-in `ssh` that runs
 * `snix nix-daemon --stdio` locally: a pure RemoteStore, whose NarFromPath
 * really crosses the wire.
 */
import assert from "node:assert/strict";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const REPO = resolve(new URL("..", import.meta.url).pathname);
/** Deno's cache, so the daemon subprocesses do not download npm packages again under another HOME. */
function denoDir(): string {
  const o = new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  return JSON.parse(new TextDecoder().decode(o.stdout)).denoDir;
}
const haveNix = new Deno.Command("nix", {
  args: ["--version"],
  stdout: "null",
  stderr: "null",
}).outputSync().success;

interface Out {
  code: number;
  stdout: string;
  stderr: string;
  bytes: Uint8Array;
}

function mkEnv(dir: string): Record<string, string> {
  return {
    PATH: `${dir}/bin:${Deno.env.get("PATH")}`,
    HOME: dir,
    XDG_CACHE_HOME: `${dir}/cache`,
    XDG_CONFIG_HOME: `${dir}/config`,
    NIX_CONFIG:
      "experimental-features = nix-command\nsubstituters =\nwarn-dirty = false\n",
  };
}

async function run(
  env: Record<string, string>,
  cmd: string,
  ...args: string[]
): Promise<Out> {
  const o = await new Deno.Command(cmd, {
    args,
    env,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return {
    code: o.code,
    stdout: dec.decode(o.stdout).trim(),
    stderr: dec.decode(o.stderr),
    bytes: o.stdout,
  };
}

async function ok(
  env: Record<string, string>,
  cmd: string,
  ...args: string[]
): Promise<Out> {
  const o = await run(env, cmd, ...args);
  if (o.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${o.code}): ${o.stderr}`);
  }
  return o;
}

Deno.test({
  name:
    "daemon + Nix 2.8: add, copy, query, cat/ls/dump over the wire, verify signatures, SIGTERM",
  ignore: !haveNix,
  async fn(t) {
    const dir = mkdtempSync(join(tmpdir(), "snix-daemon-nix-"));
    const env = mkEnv(dir);
    env.DENO_DIR = denoDir();
    const data = join(dir, "data"),
      sock = join(dir, "sock"),
      X = join(dir, "x");
    mkdirSync(join(dir, "bin"));
    writeFileSync(
      join(dir, "bin", "ssh"),
      '#!/bin/sh\n# stand-in ssh: run the remote command here\nfor last; do :; done\nexec sh -c "$last"\n',
    );
    writeFileSync(
      join(dir, "bin", "snix-stdio"),
      `#!/bin/sh\ncd ${REPO} && DENO_DIR=${env.DENO_DIR} exec ${Deno.execPath()} run -A cli/main.ts --data-dir ${data} nix-daemon --stdio --log-wire 2>>${dir}/stdio.log\n`,
    );
    chmodSync(join(dir, "bin", "ssh"), 0o755);
    chmodSync(join(dir, "bin", "snix-stdio"), 0o755);
    const S = `unix://${sock}`;
    const SSH = `ssh-ng://localhost?remote-program=${dir}/bin/snix-stdio`;

    // A closure in a scratch chroot store: two trees and a text file referring to both, signed.
    const src = join(dir, "src");
    mkdirSync(join(src, "d1", "sub"), { recursive: true });
    mkdirSync(join(src, "d2"));
    writeFileSync(join(src, "d1", "a"), "a\n");
    writeFileSync(join(src, "d1", "sub", "b"), "bee\n");
    chmodSync(join(src, "d1", "sub", "b"), 0o755);
    Deno.symlinkSync("a", join(src, "d1", "link"));
    writeFileSync(
      join(src, "d2", "big"),
      crypto.getRandomValues(new Uint8Array(65536)).join(","),
    );
    const P1 =
      (await ok(env, "nix-store", "--store", X, "--add", join(src, "d1")))
        .stdout;
    const P2 =
      (await ok(env, "nix-store", "--store", X, "--add", join(src, "d2")))
        .stdout;
    const T = (await ok(
      env,
      "nix",
      "eval",
      "--impure",
      "--store",
      X,
      "--raw",
      "--expr",
      `builtins.toFile "ref" "see \${builtins.storePath "${P1}"} and \${builtins.storePath "${P2}"}"`,
    )).stdout;
    writeFileSync(
      join(dir, "sk"),
      (await ok(env, "nix", "key", "generate-secret", "--key-name", "test-1"))
        .stdout,
    );
    const pk = (await ok(
      env,
      "sh",
      "-c",
      `nix key convert-secret-to-public < ${dir}/sk`,
    )).stdout;
    writeFileSync(
      join(dir, "sk2"),
      (await ok(env, "nix", "key", "generate-secret", "--key-name", "other-1"))
        .stdout,
    );
    const pk2 = (await ok(
      env,
      "sh",
      "-c",
      `nix key convert-secret-to-public < ${dir}/sk2`,
    )).stdout;
    // An input-addressed path (built by Nix's builtin buildenv) referring to P1, and its derivation.
    const DRV = (await ok(
      env,
      "nix-instantiate",
      "--store",
      X,
      "-E",
      `derivation { name = "ia"; system = builtins.currentSystem; builder = "builtin:buildenv"; derivations = ""; manifest = "\${builtins.storePath "${P1}"}"; }`,
    )).stdout;
    const OUT =
      (await ok(env, "nix-store", "--store", X, "--realise", DRV)).stdout;
    await ok(
      env,
      "nix",
      "store",
      "sign",
      "--store",
      X,
      "-k",
      join(dir, "sk"),
      "-r",
      T,
      OUT,
    );

    const daemon = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "cli/main.ts",
        "--data-dir",
        data,
        "nix-daemon",
        "-l",
        sock,
        "--socket-mode",
        "0660",
        "--log-wire",
      ],
      cwd: REPO,
      env,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let daemonLog = "";
    /** Waits (a little) for a --log-wire line: the daemon writes it after the reply. */
    const logged = async (re: RegExp) => {
      for (let i = 0; i < 60 && !re.test(daemonLog); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.match(daemonLog, re);
    };
    const logDone = (async () => {
      for await (
        const c of daemon.stderr.pipeThrough(new TextDecoderStream())
      ) daemonLog += c;
    })();
    // The socket is ready (and chmod-ed) once the daemon says it listens.
    for (let i = 0; i < 300 && !daemonLog.includes("listening on"); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(existsSync(sock), `daemon did not start: ${daemonLog}`);
    assert.equal(
      statSync(sock).mode & 0o777,
      0o660,
      `--socket-mode: ${daemonLog}`,
    );

    try {
      await t.step(
        "nix-store --add and nix store add-file give the paths a local store gives",
        async () => {
          const Y = join(dir, "y");
          mkdirSync(join(src, "extra"));
          writeFileSync(join(src, "extra", "e"), "extra\n");
          for (
            const args of [["nix-store", "--add", join(src, "d1", "a")], [
              "nix-store",
              "--add",
              join(src, "extra"),
            ]]
          ) {
            const ours = await ok(env, args[0], "--store", S, ...args.slice(1));
            const theirs = await ok(
              env,
              args[0],
              "--store",
              Y,
              ...args.slice(1),
            );
            assert.equal(ours.stdout, theirs.stdout);
          }
          const ours = await ok(
            env,
            "nix",
            "store",
            "add-file",
            "--store",
            S,
            join(src, "d1", "sub", "b"),
          );
          const theirs = await ok(
            env,
            "nix",
            "store",
            "add-file",
            "--store",
            Y,
            join(src, "d1", "sub", "b"),
          );
          assert.equal(ours.stdout, theirs.stdout);
          await logged(/AddToStore name="a" method="fixed:r:sha256"/);
          await logged(/AddToStoreNar path=".*-b"/);
        },
      );

      await t.step(
        "nix copy --to unix:// a signed closure; nix path-info --json -r agrees",
        async () => {
          await ok(env, "nix", "copy", "--from", X, "--to", S, T, OUT);
          await logged(/QueryValidPaths .* valid=0 /);
          await logged(/AddMultipleToStore count=4 added=4/);
          const norm = (s: string) =>
            JSON.parse(s).map((x: Record<string, unknown>) => ({
              ...x,
              registrationTime: 0,
              ultimate: false,
            })).sort((
              a: { path: string },
              b: { path: string },
            ) => a.path < b.path ? -1 : 1);
          const ours = norm(
            (await ok(
              env,
              "nix",
              "path-info",
              "--store",
              S,
              "--json",
              "-r",
              T,
              OUT,
            )).stdout,
          );
          const theirs = norm(
            (await ok(
              env,
              "nix",
              "path-info",
              "--store",
              X,
              "--json",
              "-r",
              T,
              OUT,
            )).stdout,
          );
          assert.deepEqual(ours, theirs);
          assert.equal(ours.length, 4);
          assert.equal(
            ours.find((x: { path: string }) => x.path === OUT).deriver,
            DRV,
          );
          assert.ok(
            ours.every((x: { signatures?: string[] }) =>
              x.signatures?.[0]?.startsWith("test-1:")
            ),
          );
        },
      );

      await t.step(
        "nix-store -q --references / --referrers / --tree",
        async () => {
          assert.deepEqual(
            (await ok(env, "nix-store", "--store", S, "-q", "--references", T))
              .stdout.split("\n").sort(),
            [P1, P2].sort(),
          );
          assert.deepEqual(
            (await ok(env, "nix-store", "--store", S, "-q", "--referrers", P1))
              .stdout.split("\n").sort(),
            [OUT, T].sort(),
          );
          const tree =
            (await ok(env, "nix-store", "--store", S, "-q", "--tree", T))
              .stdout;
          assert.equal(
            tree,
            (await ok(env, "nix-store", "--store", X, "-q", "--tree", T))
              .stdout,
          );
        },
      );

      await t.step(
        "NarFromPath: nix store cat, ls -R and dump-path equal nix-store --dump",
        async () => {
          assert.equal(
            (await ok(
              env,
              "nix",
              "store",
              "cat",
              "--store",
              SSH,
              `${P1}/sub/b`,
            )).stdout,
            "bee",
          );
          const ls =
            (await ok(env, "nix", "store", "ls", "--store", SSH, "-R", P1))
              .stdout;
          assert.deepEqual(ls.split("\n"), [
            "./a",
            "./link",
            "./sub",
            "./sub/b",
          ]);
          for (const p of [P1, P2, T, OUT]) {
            const ours =
              (await ok(env, "nix", "store", "dump-path", "--store", SSH, p))
                .bytes;
            const theirs = (await ok(env, "nix-store", "--dump", X + p)).bytes;
            assert.equal(ours.length, theirs.length);
            assert.ok(
              ours.every((b, i) => b === theirs[i]),
              `NAR of ${p} differs`,
            );
          }
          // (Nix kills the ssh-ng daemon when done, so the last op of each command may miss its log line.)
          assert.match(
            readFileSync(join(dir, "stdio.log"), "utf8"),
            /NarFromPath path=".*" narBytes=\d+/,
          );
        },
      );

      await t.step(
        "nix copy --from the daemon into another store: byte-identical NARs",
        async () => {
          const O = join(dir, "other");
          await ok(
            env,
            "nix",
            "copy",
            "--no-check-sigs",
            "--from",
            SSH,
            "--to",
            O,
            T,
          );
          for (const p of [P1, P2, T]) {
            const a = (await ok(env, "nix-store", "--dump", O + p)).bytes;
            const b = (await ok(env, "nix-store", "--dump", X + p)).bytes;
            assert.ok(
              a.length === b.length && a.every((x, i) => x === b[i]),
              `copy of ${p} differs`,
            );
          }
        },
      );

      await t.step(
        "nix store verify -r checks contents and signatures; AddSignatures adds one",
        async () => {
          // Content-addressed paths verify without signatures; OUT is input-addressed and signed by test-1.
          await ok(
            env,
            "nix",
            "store",
            "verify",
            "--store",
            SSH,
            "-r",
            T,
            OUT,
            "--trusted-public-keys",
            pk,
          );
          const untrusted = await run(
            env,
            "nix",
            "store",
            "verify",
            "--store",
            SSH,
            OUT,
            "--trusted-public-keys",
            pk2,
          );
          assert.notEqual(untrusted.code, 0);
          assert.match(untrusted.stderr, /is untrusted/);
          await ok(
            env,
            "nix",
            "store",
            "sign",
            "--store",
            S,
            "-k",
            join(dir, "sk2"),
            OUT,
          );
          const sigs =
            (await ok(env, "nix", "path-info", "--store", S, "--sigs", OUT))
              .stdout;
          assert.match(sigs, /test-1:/);
          assert.match(sigs, /other-1:/);
          await ok(
            env,
            "nix",
            "store",
            "verify",
            "--store",
            SSH,
            OUT,
            "--trusted-public-keys",
            pk2,
          );
        },
      );

      await t.step(
        "a derivation: import its closure, realise it (outputs valid: nothing to build)",
        async () => {
          await ok(
            env,
            "sh",
            "-c",
            `nix-store --store ${X} --export $(nix-store --store ${X} -qR ${DRV}) | nix-store --store ${S} --import`,
          );
          assert.equal(
            (await ok(env, "nix-store", "--store", SSH, "--realise", DRV))
              .stdout,
            OUT,
          );
          assert.match(
            readFileSync(join(dir, "stdio.log"), "utf8"),
            /BuildPaths targets=\[".*-ia\.drv!\*"\]/,
          );
        },
      );

      await t.step(
        "a NAR that does not match its recorded hash is refused and not recorded",
        async () => {
          mkdirSync(join(src, "bad"));
          writeFileSync(join(src, "bad", "f"), "original\n");
          const B = (await ok(
            env,
            "nix-store",
            "--store",
            X,
            "--add",
            join(src, "bad"),
          )).stdout;
          // Change the file behind Nix's back: nix copy sends the NAR of what is on disk now.
          chmodSync(X + B, 0o755);
          chmodSync(join(X + B, "f"), 0o644);
          writeFileSync(join(X + B, "f"), "tampered\n");
          const copy = await run(env, "nix", "copy", "--from", X, "--to", S, B);
          assert.notEqual(copy.code, 0);
          assert.match(copy.stderr, /refusing .*-bad: .*(hash|mismatch)/i);
          assert.equal(
            (await run(env, "nix-store", "--store", S, "--check-validity", B))
              .code,
            1,
          );
          await logged(/AddMultipleToStore .*error=/);
        },
      );

      await t.step("GC and builds: honest answers", async () => {
        const gc = await ok(env, "nix-store", "--store", S, "--gc");
        assert.match(
          gc.stdout + gc.stderr,
          /0 store paths deleted|0\.00 MiB freed/,
        );
        const build = await run(
          env,
          "nix-store",
          "--store",
          S,
          "--realise",
          "/nix/store/00000000000000000000000000000000-nope",
        );
        assert.notEqual(build.code, 0);
        assert.equal(
          (await ok(env, "nix-store", "--store", S, "--realise", T)).stdout,
          T,
        );
        assert.doesNotMatch(daemonLog, /FATAL/);
      });

      await t.step(
        "SIGTERM: the daemon exits cleanly and removes its socket",
        async () => {
          daemon.kill("SIGTERM");
          const st = await daemon.status;
          await logDone;
          assert.equal(st.code, 0, daemonLog);
          assert.ok(!existsSync(sock), "socket removed");
        },
      );
    } finally {
      try {
        daemon.kill("SIGKILL");
      } catch {
        // already gone
      }
      await daemon.status;
      rmSync(dir, { recursive: true, force: true });
    }
  },
});

Deno.test({
  name:
    "daemon + Nix 2.8 under Bun (the runtime of the single binary): add, path-info, ssh-ng NarFromPath",
  ignore: !haveNix,
  async fn() {
    const dir = mkdtempSync(join(tmpdir(), "snix-daemon-bun-"));
    const env = mkEnv(dir);
    const sock = join(dir, "sock");
    mkdirSync(join(dir, "bin"));
    writeFileSync(
      join(dir, "bin", "ssh"),
      '#!/bin/sh\nfor last; do :; done\nexec sh -c "$last"\n',
    );
    writeFileSync(
      join(dir, "bin", "snix-stdio"),
      `#!/bin/sh\ncd ${REPO} && exec "$BUN" cli/main.ts --data-dir ${dir}/data nix-daemon --stdio 2>/dev/null\n`,
    );
    chmodSync(join(dir, "bin", "ssh"), 0o755);
    chmodSync(join(dir, "bin", "snix-stdio"), 0o755);
    // Bun's own binary (not npx, which would not pass SIGTERM on).
    const bun = new TextDecoder().decode(
      new Deno.Command("npx", {
        args: ["-y", "bun@1", "-e", "console.log(process.execPath)"],
        stderr: "null",
      })
        .outputSync().stdout,
    ).trim();
    env.BUN = bun;
    const daemon = new Deno.Command(bun, {
      args: [
        "cli/main.ts",
        "--data-dir",
        join(dir, "data"),
        "nix-daemon",
        "-l",
        sock,
      ],
      cwd: REPO,
      env: { ...env, HOME: Deno.env.get("HOME") ?? "/root" },
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      for (let i = 0; i < 300 && !existsSync(sock); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      await new Promise((r) => setTimeout(r, 200));
      writeFileSync(join(dir, "f"), "under bun\n");
      const p = (await ok(
        env,
        "nix-store",
        "--store",
        `unix://${sock}`,
        "--add",
        join(dir, "f"),
      )).stdout;
      assert.equal(
        p,
        (await ok(
          env,
          "nix-store",
          "--store",
          join(dir, "y"),
          "--add",
          join(dir, "f"),
        )).stdout,
      );
      const info = JSON.parse(
        (await ok(
          env,
          "nix",
          "path-info",
          "--store",
          `unix://${sock}`,
          "--json",
          p,
        )).stdout,
      );
      assert.equal(info[0].narSize, 128);
      const SSH = `ssh-ng://localhost?remote-program=${dir}/bin/snix-stdio`;
      assert.equal(
        (await ok(env, "nix", "store", "cat", "--store", SSH, p)).stdout,
        "under bun",
      );
    } finally {
      daemon.kill("SIGTERM");
      await daemon.status;
      rmSync(dir, { recursive: true, force: true });
    }
  },
});
