/**
 * A view of a stream that a consumer may abandon (cancel or error out of)
 * without touching the source, plus a way to read the source's remainder
 * afterwards: how the daemon keeps a connection in step when an addition
 * fails halfway through the data the client is sending.
 *
 * @module
 */

/** The guarded view and the remainder reader. */
export interface GuardedStream {
  /** Chunks of the source; cancelling this does not cancel the source. */
  readonly stream: ReadableStream<Uint8Array>;
  /** Reads and drops whatever the source still has (waits for a read in flight). */
  rest(): Promise<void>;
  /** Whether the source has ended. */
  readonly ended: boolean;
}

/** Guards `source` (takes its lock). */
export function guarded(source: ReadableStream<Uint8Array>): GuardedStream {
  const rd = source.getReader();
  let inflight: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
  let ended = false;
  const stream = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      inflight = rd.read();
      const res = await inflight;
      inflight = undefined;
      if (res.done) {
        ended = true;
        ctl.close();
      } else ctl.enqueue(res.value);
    },
    cancel() {
      // leave the source to rest()
    },
  }, { highWaterMark: 0 });
  return {
    stream,
    get ended() {
      return ended;
    },
    async rest() {
      if (inflight) {
        const res = await inflight;
        inflight = undefined;
        if (res.done) ended = true;
      }
      while (!ended) {
        const res = await rd.read();
        if (res.done) ended = true;
      }
    },
  };
}
