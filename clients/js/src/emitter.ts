type Handler<T> = (value: T) => void;

/**
 * A small typed event emitter. A handler that throws does not stop the others: its
 * error is rethrown asynchronously, where the host reports it (like EventTarget).
 */
export class Emitter<M> {
  private readonly handlers = new Map<keyof M, Set<Handler<never>>>();

  on<K extends keyof M>(type: K, handler: Handler<M[K]>): () => void {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(handler as Handler<never>);
    return () => this.off(type, handler);
  }

  off<K extends keyof M>(type: K, handler?: Handler<M[K]>): void {
    if (handler === undefined) {
      this.handlers.delete(type);
      return;
    }
    const set = this.handlers.get(type);
    set?.delete(handler as Handler<never>);
    if (set?.size === 0) this.handlers.delete(type);
  }

  emit<K extends keyof M>(type: K, value: M[K]): void {
    const set = this.handlers.get(type);
    if (!set) return;
    for (const h of [...set]) {
      try {
        (h as Handler<M[K]>)(value);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  count(type: keyof M): number {
    return this.handlers.get(type)?.size ?? 0;
  }

  clear(): void {
    this.handlers.clear();
  }
}
