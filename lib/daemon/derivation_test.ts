import assert from "node:assert/strict";
import { derivationOutputs } from "./derivation.ts";

Deno.test("derivation: outputs of ATerm derivations (plain, escaped strings, floating CA, versioned)", () => {
  const drv =
    'Derive([("dev","/nix/store/aaaa-x-dev","",""),("out","/nix/store/bbbb-x","r:sha256","")],' +
    '[],["/nix/store/cccc-src"],"x86_64-linux","/bin/sh",["-c","echo \\"hi\\"\\n"],[("out","/nix/store/bbbb-x")])';
  assert.deepEqual([...derivationOutputs(drv)], [[
    "dev",
    "/nix/store/aaaa-x-dev",
  ], ["out", "/nix/store/bbbb-x"]]);
  assert.deepEqual([
    ...derivationOutputs(
      'Derive([("out","","r:sha256","")],[],[],"s","b",[],[])',
    ),
  ], [["out", ""]]);
  assert.deepEqual(
    [...derivationOutputs(
      'DrvWithVersion("xp-dyn-drv",[("out","/nix/store/dddd-y","","")],[],[],"s","b",[],[])',
    )],
    [["out", "/nix/store/dddd-y"]],
  );
  assert.throws(
    () => derivationOutputs("hello"),
    /invalid derivation: expected 'Derive\(' at offset 0/,
  );
  assert.throws(
    () => derivationOutputs('Derive([("out","/nix/store/x'),
    /unterminated string/,
  );
});
