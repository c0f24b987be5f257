/**
 * The single `snix` binary: builds it with scripts/build.sh into a temporary
 * path, then checks `--version`, `--help` of every (sub)command, and that
 * `snix nar dump /usr/share/doc` is byte for byte `nix-store --dump`, and that
 * `snix store mount` serves what `snix store import` stored (FUSE reader
 * workers must load inside the compiled binary), and that its gRPC daemon
 * serves repeated large Reads to python grpcio (Bun's HTTP/2 is not Deno's).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { buildProgram } from "../cli/main.ts";
import { VERSION } from "../cli/version.ts";
import { forceUnmount, sh, shOk, skipFuse } from "./fuse_helpers.ts";
import { generatePythonStubs } from "./grpc_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const work = fs.mkdtempSync(join(tmpdir(), "snix-binary-"));
const bin = join(work, "snix");
globalThis.addEventListener?.(
  "unload",
  () => fs.rmSync(work, { recursive: true, force: true }),
);

let built: { status: number | null; stderr: string } | undefined;
function build() {
  built ??= (() => {
    const r = spawnSync("bash", [join(ROOT, "scripts/build.sh"), bin], {
      cwd: ROOT,
      encoding: "utf8",
    });
    return { status: r.status, stderr: r.stderr };
  })();
  assert.equal(built.status, 0, `build failed:\n${built.stderr}`);
  assert.ok(fs.existsSync(bin));
}

function run(args: string[]) {
  return spawnSync(bin, args, {
    encoding: "utf8",
    env: { ...Deno.env.toObject(), SNIX_DATA_DIR: join(work, "data") },
  });
}

/** The part of a commander Command we walk. */
interface CommandLike {
  readonly commands: readonly CommandLike[];
  name(): string;
}

/** Every command path below the root, e.g. ["store", "daemon"]. */
function commandPaths(cmd: CommandLike, prefix: string[] = []): string[][] {
  const out: string[][] = [];
  for (const sub of cmd.commands) {
    const path = [...prefix, sub.name()];
    out.push(path, ...commandPaths(sub, path));
  }
  return out;
}

Deno.test("binary: builds and prints its version", () => {
  build();
  const r = run(["--version"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), VERSION);
});

Deno.test("binary: --help works for every subcommand", async () => {
  build();
  const top = run(["--help"]);
  assert.equal(top.status, 0, top.stderr);
  assert.match(top.stdout, /Usage: snix/);
  const paths = commandPaths(await buildProgram());
  assert.ok(
    paths.some((p) => p.join(" ") === "nar dump"),
    "nar dump is missing",
  );
  for (const path of paths) {
    const r = run([...path, "--help"]);
    assert.equal(r.status, 0, `${path.join(" ")} --help: ${r.stderr}`);
    assert.match(
      r.stdout,
      new RegExp(`Usage: snix ${path.join(" ")}`),
      path.join(" "),
    );
    assert.equal(r.stderr, "", path.join(" "));
  }
});

async function sha256Of(
  cmd: string,
  args: string[],
): Promise<{ hex: string; size: number; code: number | null }> {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
  const h = createHash("sha256");
  let size = 0;
  for await (const chunk of child.stdout!) {
    h.update(chunk);
    size += chunk.length;
  }
  const code = await new Promise<number | null>((r) => child.on("close", r));
  return { hex: h.digest("hex"), size, code };
}

Deno.test("binary: snix nar dump /usr/share/doc equals nix-store --dump", async () => {
  build();
  const ours = await sha256Of(bin, ["nar", "dump", "/usr/share/doc"]);
  const theirs = await sha256Of("nix-store", ["--dump", "/usr/share/doc"]);
  assert.equal(ours.code, 0);
  assert.equal(theirs.code, 0);
  assert.equal(ours.size, theirs.size);
  assert.equal(ours.hex, theirs.hex);
});

Deno.test("binary: store export goes through the NAR workers (addon found inside the binary) and equals nix-store --dump; head -c ends it quietly", async () => {
  build();
  const src = join(work, "export-src");
  fs.mkdirSync(join(src, "d"), { recursive: true });
  fs.writeFileSync(
    join(src, "big"),
    new Uint8Array(6 << 20).map((_, i) => (i * 2654435761) >>> 24),
  );
  for (let i = 0; i < 200; i++) {
    fs.writeFileSync(join(src, "d", `f${i}`), `file ${i}\n`.repeat(i));
  }
  const data = join(work, "export-data");
  const path = execFileSync(bin, ["--data-dir", data, "store", "import", src], {
    encoding: "utf8",
  }).trim();
  const args = [
    "--data-dir",
    data,
    "--log-level",
    "debug",
    "store",
    "export",
    path,
  ];
  const ours = await sha256Of(bin, args);
  const theirs = await sha256Of("nix-store", ["--dump", src]);
  assert.equal(ours.code, 0);
  assert.equal(ours.hex, theirs.hex);
  const r = spawnSync("bash", [
    "-c",
    `'${bin}' ${
      args.join(" ")
    } 2>/dev/null | head -c 1000 | wc -c; echo "\${PIPESTATUS[0]}"`,
  ], { encoding: "utf8" });
  assert.equal(r.stdout, "1000\n0\n");
  const full = spawnSync(bin, args, {
    encoding: "utf8",
    stdio: ["ignore", "ignore", "pipe"],
  });
  assert.match(full.stderr, /written by the NAR workers/, full.stderr);
});

Deno.test("binary: names that are not UTF-8 dump like nix-store --dump", async () => {
  build();
  // Deno cannot create such names (its paths are strings): python3 does.
  const dir = join(work, "non-utf8");
  const r = spawnSync("python3", [
    "-c",
    "import os,sys; d=sys.argv[1].encode(); os.makedirs(d+b'/sub\\xfe'); open(d+b'/a\\xffb','w').write('x'); os.symlink(b'\\xff', d+b'/sub\\xfe/l')",
    dir,
  ]);
  assert.equal(r.status, 0, String(r.stderr));
  const ours = await sha256Of(bin, ["nar", "dump", dir]);
  const theirs = await sha256Of("nix-store", ["--dump", dir]);
  assert.equal(ours.code, 0);
  assert.equal(ours.hex, theirs.hex);
});

Deno.test({
  name:
    "binary: store import, then store mount shows the same tree (FUSE under the compiled binary)",
  ignore: skipFuse(),
  async fn() {
    build();
    const data = join(work, "mount-data");
    const mnt = fs.mkdtempSync(join(tmpdir(), "snix-binary-mnt-"));
    const env = { ...Deno.env.toObject(), SNIX_DATA_DIR: data };
    const imported = spawnSync(
      bin,
      ["store", "import", "/usr/share/doc/bash"],
      {
        encoding: "utf8",
        env,
      },
    );
    assert.equal(imported.status, 0, imported.stderr);
    const base = imported.stdout.trim().split("/").pop()!;
    const mount = new Deno.Command(bin, {
      args: ["store", "mount", mnt],
      env,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const finished = mount.output();
    try {
      let listed = "";
      for (let i = 0; i < 100 && !listed; i++) {
        await new Promise((r) => setTimeout(r, 100));
        listed = (await sh(`ls '${mnt}/${base}' 2>/dev/null`)).stdout;
      }
      assert.match(listed, /copyright/);
      await shOk(`diff -r '${mnt}/${base}' /usr/share/doc/bash`);
    } finally {
      mount.kill("SIGTERM");
      const timer = setTimeout(() => mount.kill("SIGKILL"), 10_000);
      const out = await finished;
      clearTimeout(timer);
      await forceUnmount(mnt);
      fs.rmSync(mnt, { recursive: true, force: true });
      assert.equal(
        out.code,
        0,
        `the mount exits 0 on SIGTERM:\n${
          new TextDecoder().decode(out.stderr)
        }`,
      );
    }
  },
});

Deno.test("binary: the store daemon serves repeated large Reads to python grpcio and big Puts and Reads to the binary itself (gRPC under Bun)", async () => {
  build();
  const data = join(work, "grpc-data");
  const env = { ...Deno.env.toObject(), SNIX_DATA_DIR: data };
  // 48 MiB of the deterministic pattern, a few hundred chunks.
  const file = join(work, "grpc-blob");
  const block = new Uint8Array(1 << 20);
  const fd = fs.openSync(file, "w");
  for (let i = 0; i < 48; i++) {
    for (let j = 0; j < block.length; j += 4096) block[j] = (i * 31 + j) & 255;
    fs.writeSync(fd, block);
  }
  fs.closeSync(fd);
  const imported = spawnSync(bin, ["store", "import", file], {
    encoding: "utf8",
    env,
  });
  assert.equal(imported.status, 0, imported.stderr);
  const stubs = join(work, "stubs");
  fs.mkdirSync(stubs, { recursive: true });
  await generatePythonStubs(stubs);
  const sock = join(work, "grpc.sock");
  const daemon = spawn(bin, ["store", "daemon", "-l", `unix:${sock}`], {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  daemon.stderr!.on("data", (d) => stderr += d);
  try {
    for (let i = 0; i < 100 && !fs.existsSync(sock); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const want = createHash("sha256").update(fs.readFileSync(file))
      .digest("hex");
    // The blob digest: the file's BLAKE3, from b3sum (independent of us).
    const digest = execFileSync("b3sum", ["--no-names", file], {
      encoding: "utf8",
    }).trim();
    const script = `
import sys, hashlib, grpc
sys.path.insert(0, ${JSON.stringify(stubs)})
from snix.castore.protos import rpc_blobstore_pb2 as bpb, rpc_blobstore_pb2_grpc as bgrpc
ch = grpc.insecure_channel("unix:${sock}")
stub = bgrpc.BlobServiceStub(ch)
for _ in range(4):
    h = hashlib.sha256()
    for m in stub.Read(bpb.ReadBlobRequest(digest=bytes.fromhex("${digest}")), timeout=60):
        h.update(m.data)
    print(h.hexdigest())
`;
    const py = spawnSync("/usr/bin/python3", ["-c", script], {
      encoding: "utf8",
      timeout: 120_000,
    });
    assert.equal(py.status, 0, `${py.stderr}\ndaemon: ${stderr}`);
    assert.deepEqual(py.stdout.trim().split("\n"), [want, want, want, want]);
    // The binary as a client of its own daemon: a big Put and Read back
    // (Bun's HTTP/2 once stalled both after ~4 MiB; see lib/grpc/transport.ts).
    const other = join(work, "grpc-blob-2");
    fs.writeFileSync(other, crypto.getRandomValues(new Uint8Array(1 << 16)));
    for (let i = 0; i < 9; i++) {
      fs.appendFileSync(other, fs.readFileSync(file).subarray(i << 20));
    }
    const remote = ["--remote", `grpc+unix://${sock}`];
    const put = spawnSync(bin, [...remote, "store", "import", other], {
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(put.status, 0, `${put.stderr}\ndaemon: ${stderr}`);
    const back = spawnSync(
      bin,
      [...remote, "store", "cat", put.stdout.trim()],
      { timeout: 60_000, maxBuffer: 1 << 30 },
    );
    assert.equal(back.status, 0, `${back.stderr}\ndaemon: ${stderr}`);
    assert.equal(
      createHash("sha256").update(back.stdout).digest("hex"),
      createHash("sha256").update(fs.readFileSync(other)).digest("hex"),
    );
  } finally {
    daemon.kill("SIGTERM");
    await new Promise((r) => daemon.once("exit", r));
  }
});
