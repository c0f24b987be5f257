/**
 * Interop with python grpcio: stubs generated from our proto/ at test time,
 * a python client against `snix store daemon` (TCP and unix socket, then
 * read-only), checking bytes against b3sum and nix-store --dump, and codes.
 */
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import {
  type Daemon,
  generatePythonStubs,
  run,
  startDaemon,
} from "./grpc_helpers.ts";

const SCRIPT = new URL("./python/grpc_interop.py", import.meta.url).pathname;

async function python(
  daemon: Daemon,
  stubs: string,
  target: string,
  mode: string,
  ...extra: string[]
) {
  const r = await run("/usr/bin/python3", [
    SCRIPT,
    stubs,
    target,
    mode,
    ...extra,
  ], {
    timeoutMs: 90_000,
  });
  const out = new TextDecoder().decode(r.stdout);
  assert.equal(
    r.code,
    0,
    `python ${mode} against ${target} failed (${r.code}):\n${out}\n${r.stderr}\ndaemon:\n${daemon.stderr()}`,
  );
  assert.match(out, /^OK \d+ checks$/m);
  return out;
}

Deno.test("python grpcio against snix store daemon (TCP, unix socket, read-only)", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "snix-grpc-py-" });
  try {
    const stubs = `${tmp}/stubs`;
    await Deno.mkdir(stubs);
    await generatePythonStubs(stubs);
    const sock = `${tmp}/daemon.sock`;
    const daemon = await startDaemon(
      ["--data-dir", `${tmp}/data`],
      ["--listen-address", "127.0.0.1:0", "--listen-address", `unix:${sock}`],
    );
    let blobHex: string;
    try {
      assert.equal(daemon.addresses.length, 2);
      assert.equal(statSync(sock).mode & 0o777, 0o660, "socket mode 0660");
      const out = await python(daemon, stubs, daemon.addresses[0], "rw");
      blobHex = out.match(/^BLOB ([0-9a-f]{64})$/m)![1];
      await python(daemon, stubs, `unix:${sock}`, "rw");
    } finally {
      assert.equal(await daemon.stop("SIGTERM"), 0, daemon.stderr());
    }
    assert.throws(() => statSync(sock), "socket removed on exit");
    // The same data directory, read-only: Puts are refused, reads work.
    const ro = await startDaemon(["--data-dir", `${tmp}/data`], [
      "--listen-address",
      `unix:${sock}`,
      "--read-only",
    ]);
    try {
      await python(ro, stubs, `unix:${sock}`, "ro", blobHex);
    } finally {
      assert.equal(await ro.stop("SIGINT"), 0, ro.stderr());
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
