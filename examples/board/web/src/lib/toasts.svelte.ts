// Error toasts (data-testid="error"). Identical messages are merged, not stacked.
let seq = 0;
const timers = new Map<number, ReturnType<typeof setTimeout>>();

export interface Toast {
  id: number;
  message: string;
  code: string | undefined;
}

export const toasts: Toast[] = $state([]);

/** Anything a failed call or load may hand over. */
type Failure = unknown;

const field = (v: unknown, k: string): unknown =>
  v != null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;

export function describe(err: Failure): string {
  if (err == null) return 'Something went wrong';
  if (typeof err === 'string') return err;
  const inner = field(err, 'error');
  if (inner && typeof inner === 'object') return describe(inner);
  const message = field(err, 'message');
  if (typeof message === 'string' && message) return message;
  const code = field(err, 'code');
  if (typeof code === 'string') return code;
  return String(err);
}

export function errorCode(err: Failure): string | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const inner = field(err, 'error');
  const code = inner && typeof inner === 'object' ? field(inner, 'code') : field(err, 'code');
  return typeof code === 'string' ? code : undefined;
}

export function dismiss(id: number): void {
  const i = toasts.findIndex((t) => t.id === id);
  if (i >= 0) toasts.splice(i, 1);
  clearTimeout(timers.get(id));
  timers.delete(id);
}

export function showError(err: Failure, ttl = 6000): number {
  const message = describe(err);
  const code = errorCode(err);
  const existing = toasts.find((t) => t.message === message);
  const id = existing ? existing.id : ++seq;
  if (!existing) {
    toasts.push({ id, message, code });
    while (toasts.length > 4) dismiss(toasts[0].id);
  }
  clearTimeout(timers.get(id));
  timers.set(id, setTimeout(() => dismiss(id), ttl));
  return id;
}
