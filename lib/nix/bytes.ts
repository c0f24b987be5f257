/**
 * Byte-array helpers shared by every layer above this one.
 *
 * @module
 */

/**
 * The parts one after another in one array. A single part is returned as it
 * is (not copied); `total`, when the caller knows it, spares a pass.
 */
export function concatBytes(parts: Uint8Array[], total?: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  let n = total ?? 0;
  if (total === undefined) { for (const p of parts) n += p.byteLength; }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}
