/**
 * A one-slot hand-over queue that turns `push()` calls into an async
 * iterable for a client-streaming call, with backpressure: `push` resolves
 * once the consumer has taken the item, and rejects once the queue failed
 * (e.g. the call ended early), so a writer never waits forever.
 *
 * (Written here because web streams' `ReadableStream.from` gives no way to
 * learn that the consumer took an item, which backpressure needs.)
 *
 * @module
 */

/** Items pushed by a producer, iterated once by a consumer. */
export class PushQueue<T> implements AsyncIterable<T> {
  #item:
    | { value: T; taken: () => void; failed: (e: unknown) => void }
    | undefined;
  #waiting: ((r: IteratorResult<T>) => void) | undefined;
  #waitingFail: ((e: unknown) => void) | undefined;
  #ended = false;
  #error: unknown;
  #failed = false;

  /** Hands `value` over; resolves when the consumer took it. */
  push(value: T): Promise<void> {
    if (this.#failed) return Promise.reject(this.#error);
    if (this.#ended) return Promise.reject(new Error("push after end"));
    if (this.#item) {
      return Promise.reject(
        new Error("push before the previous push resolved"),
      );
    }
    return new Promise<void>((taken, failed) => {
      if (this.#waiting) {
        const w = this.#waiting;
        this.#waiting = this.#waitingFail = undefined;
        w({ value, done: false });
        taken();
      } else {
        this.#item = { value, taken, failed };
      }
    });
  }

  /** No more items: the consumer's iteration ends after the pending one. */
  end(): void {
    this.#ended = true;
    if (!this.#item && this.#waiting) {
      const w = this.#waiting;
      this.#waiting = this.#waitingFail = undefined;
      w({ value: undefined, done: true });
    }
  }

  /** Fails the queue: pending and later pushes reject with `error`; the consumer's iteration throws it. */
  fail(error: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#error = error;
    const item = this.#item;
    this.#item = undefined;
    item?.failed(error);
    const wf = this.#waitingFail;
    this.#waiting = this.#waitingFail = undefined;
    wf?.(error);
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.#failed) return Promise.reject(this.#error);
        const item = this.#item;
        if (item) {
          this.#item = undefined;
          item.taken();
          return Promise.resolve({ value: item.value, done: false });
        }
        if (this.#ended) {
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          this.#waiting = resolve;
          this.#waitingFail = reject;
        });
      },
      throw: (e: unknown) => {
        // The call failed: writers learn why.
        this.fail(e);
        return Promise.resolve({ value: undefined, done: true });
      },
      return: () => {
        // The consumer stopped: nobody will take further items.
        if (!this.#ended) {
          this.fail(new Error("the call ended before all data was sent"));
        }
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
