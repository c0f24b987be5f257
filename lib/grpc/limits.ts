/**
 * Message sizes and HTTP/2 flow-control settings shared by the gRPC servers
 * and clients, chosen deliberately (see the comments) rather than left at
 * library defaults.
 *
 * @module
 */

/**
 * Largest single message either side accepts or sends (readMaxBytes /
 * writeMaxBytes). Blob data travels in messages of at most
 * {@linkcode MAX_DATA_MESSAGE_BYTES}; what needs more room is a Directory with
 * very many entries (~100 bytes each, so ~160k entries fit). A peer that
 * sends more gets RESOURCE_EXHAUSTED instead of making us buffer it.
 */
export const MAX_MESSAGE_BYTES = 16 << 20;

/**
 * Blob data messages are coalesced up to at least this size when possible.
 * The local store's chunks (128..512 KiB) are each sent as one message
 * without a copy, and a client receiving through Connect then finds whole
 * chunks inside single messages (verified and handed out without copying).
 * Only smaller pieces are combined (the Read fast path frames several pieces
 * as one message without copying them either).
 */
export const MIN_DATA_MESSAGE_BYTES = 128 << 10;

/** Blob data messages are split so none exceeds this size. */
export const MAX_DATA_MESSAGE_BYTES = 1 << 20;

/**
 * HTTP/2 settings for both ends. The per-stream window (what a peer may send
 * on one stream before we read it) is a few data messages deep so a single
 * Read or Put keeps the pipe full; frames may carry a whole data message.
 * Per-session buffering is bounded by {@linkcode SESSION_WINDOW_BYTES}.
 */
export const HTTP2_SETTINGS = {
  initialWindowSize: 4 << 20,
  maxFrameSize: (1 << 20) + 64,
  maxConcurrentStreams: 256,
};

/**
 * Connection-level receive window set on every session (the HTTP/2 default
 * of 64 KiB throttles large transfers to a crawl on a multi-stream session).
 */
export const SESSION_WINDOW_BYTES = 32 << 20;

/** How many chunks a blob client fetches ahead in parallel. */
export const CHUNK_FETCH_CONCURRENCY = 8;

/** Largest chunk a client accepts from a Stat response (chunks are fetched whole). */
export const MAX_CHUNK_BYTES = 64 << 20;
