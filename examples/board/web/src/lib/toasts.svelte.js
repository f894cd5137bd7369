// Error toasts (data-testid="error"). Identical messages are merged, not stacked.
let seq = 0;
const timers = new Map();

export const toasts = $state([]);

export function describe(err) {
  if (err == null) return 'Something went wrong';
  if (typeof err === 'string') return err;
  if (err.error && typeof err.error === 'object') return describe(err.error);
  if (typeof err.message === 'string' && err.message) return err.message;
  if (typeof err.code === 'string') return err.code;
  return String(err);
}

export function errorCode(err) {
  if (!err || typeof err !== 'object') return undefined;
  if (err.error && typeof err.error === 'object') return err.error.code;
  return err.code;
}

export function dismiss(id) {
  const i = toasts.findIndex((t) => t.id === id);
  if (i >= 0) toasts.splice(i, 1);
  clearTimeout(timers.get(id));
  timers.delete(id);
}

export function showError(err, ttl = 6000) {
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
