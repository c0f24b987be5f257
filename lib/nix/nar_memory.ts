/**
 * In-memory file trees for small NARs: build a {@link NarNode} from a plain
 * object and collect a NAR back into one. Meant for tests and small inputs;
 * everything is held in memory.
 *
 * @module
 */
import type { NarNode } from "./nar_writer.ts";
import { readNar } from "./nar_reader.ts";
import { NarError } from "./nar_common.ts";

/** A file tree held in memory. Directory entries are kept in the given order. */
export type NarTree =
  | { type: "regular"; executable?: boolean; contents: Uint8Array }
  | { type: "symlink"; target: Uint8Array }
  | { type: "directory"; entries: [name: Uint8Array, child: NarTree][] };

/** Wraps a tree as a {@link NarNode} (entries in their given order, unsorted ones included). */
export function narNodeFromTree(tree: NarTree): NarNode {
  switch (tree.type) {
    case "regular": {
      const data = tree.contents;
      return {
        type: "regular",
        executable: tree.executable ?? false,
        size: data.length,
        contents: () =>
          Promise.resolve(
            new ReadableStream<Uint8Array>({
              start(c) {
                if (data.length > 0) c.enqueue(data);
                c.close();
              },
            }),
          ),
      };
    }
    case "symlink":
      return { type: "symlink", target: tree.target };
    case "directory": {
      const entries = tree.entries;
      return {
        type: "directory",
        async *entries() {
          for (const [name, child] of entries) {
            yield [name, narNodeFromTree(child)];
          }
        },
      };
    }
  }
}

/** Reads a whole NAR into a tree (strict, see {@link readNar}). */
export async function readNarTree(
  source: ReadableStream<Uint8Array>,
): Promise<NarTree> {
  let root: NarTree | undefined;
  const dirs: Extract<NarTree, { type: "directory" }>[] = [];
  const place = (path: Uint8Array[], node: NarTree) => {
    if (path.length === 0) root = node;
    else dirs[path.length - 1].entries.push([path[path.length - 1], node]);
  };
  for await (const ev of readNar(source)) {
    switch (ev.type) {
      case "regular": {
        const parts: Uint8Array[] = [];
        let n = 0;
        for await (const c of ev.contents) {
          parts.push(c.slice());
          n += c.length;
        }
        const contents = new Uint8Array(n);
        let o = 0;
        for (const p of parts) {
          contents.set(p, o);
          o += p.length;
        }
        place(ev.path, {
          type: "regular",
          executable: ev.executable,
          contents,
        });
        break;
      }
      case "symlink":
        place(ev.path, { type: "symlink", target: ev.target });
        break;
      case "directory": {
        const d: NarTree = { type: "directory", entries: [] };
        place(ev.path, d);
        dirs[ev.path.length] = d;
        break;
      }
      case "directory-end":
        dirs.length = ev.path.length;
        break;
    }
  }
  if (!root) throw new NarError("empty NAR");
  return root;
}
