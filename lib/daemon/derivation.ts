/**
 * Just enough of the derivation ATerm format (`Derive([...outputs...],...)`)
 * to list a derivation's outputs: name and path (empty for floating
 * content-addressed outputs). Written here because lib/nix has no derivation
 * parser and the daemon needs only this.
 *
 * @module
 */

/** Outputs of a derivation: name to absolute path ("" if not known in advance). */
export function derivationOutputs(text: string): Map<string, string> {
  let i = 0;
  const expect = (s: string) => {
    if (!text.startsWith(s, i)) {
      throw new Error(`invalid derivation: expected '${s}' at offset ${i}`);
    }
    i += s.length;
  };
  const str = (): string => {
    expect('"');
    let out = "";
    for (;;) {
      const ch = text[i++];
      if (ch === undefined) {
        throw new Error("invalid derivation: unterminated string");
      }
      if (ch === '"') return out;
      if (ch === "\\") {
        const e = text[i++];
        out += e === "n" ? "\n" : e === "r" ? "\r" : e === "t" ? "\t" : e;
      } else out += ch;
    }
  };
  if (text.startsWith("DrvWithVersion(")) {
    expect("DrvWithVersion(");
    str();
    expect(",");
  } else expect("Derive(");
  expect("[");
  const outs = new Map<string, string>();
  while (text[i] !== "]") {
    if (outs.size) expect(",");
    expect("(");
    const name = str();
    expect(",");
    const path = str();
    expect(",");
    str();
    expect(",");
    str();
    expect(")");
    outs.set(name, path);
  }
  return outs;
}
