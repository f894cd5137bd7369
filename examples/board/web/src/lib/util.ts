import type { LiveError } from 'liveroom';

const PALETTE = ['#e5484d', '#f76b15', '#ffb224', '#30a46c', '#12a594', '#0090ff', '#5b5bd6', '#8e4ec6', '#d6409f'];

export function initials(name: string | null | undefined): string {
  const words = String(name || '?').trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return '?';
  if (words.length === 1) return Array.from(words[0]).slice(0, 1).join('').toUpperCase();
  return (Array.from(words[0])[0] + Array.from(words[1])[0]).toUpperCase();
}

export function fallbackColor(key: unknown): string {
  let h = 0;
  for (const ch of String(key ?? '')) h = (h * 31 + (ch.codePointAt(0) ?? 0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

export function safeColor(color: unknown, key: unknown): string {
  return typeof color === 'string' && /^#[0-9a-fA-F]{3,8}$|^(rgb|hsl)a?\([\d\s.,%]+\)$/.test(color)
    ? color
    : fallbackColor(key);
}

// Dark or light text for a background colour (#rgb / #rrggbb).
export function textOn(color: string | null | undefined): string {
  const m = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(color || '');
  if (!m) return '#fff';
  let hex = m[1];
  if (hex.length === 3) hex = hex.split('').map((c) => c + c).join('');
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  const lum = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return lum > 0.62 ? '#1c2024' : '#fff';
}

export { PALETTE };

/** The server's limits (examples/board/src/app.rs and identity.rs), shown before submitting. */
export const MAX_TITLE = 200;
export const MAX_NAME = 40;
export const MAX_BOARD_NAME = 80;

/**
 * Colours for the people in a room, distinct while there are colours to go round. Each keeps
 * its own (chosen or given) colour unless someone before it, in key order, already shows it;
 * then it takes the next free palette colour. Every page computes this from the same roster,
 * so everyone sees the same colour for the same person.
 */
export function distinctColors(people: { key: string; color?: string | null }[]): Map<string, string> {
  const out = new Map<string, string>();
  const used = new Set<string>();
  const sorted = [...people].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const p of sorted) {
    const own = safeColor(p.color, p.key).toLowerCase();
    let color = own;
    if (used.has(own)) {
      const at = PALETTE.indexOf(own);
      const start = at >= 0 ? at + 1 : PALETTE.indexOf(fallbackColor(p.key));
      for (let i = 0; i < PALETTE.length; i++) {
        const c = PALETTE[(start + i) % PALETTE.length];
        if (!used.has(c)) {
          color = c;
          break;
        }
      }
    }
    used.add(color);
    out.set(p.key, color);
  }
  return out;
}

/** Whether a store value is the `{ error }` of a failed load. */
export function isError<T>(v: T | { error: LiveError }): v is { error: LiveError } {
  return v != null && typeof v === 'object' && !Array.isArray(v) && 'error' in v && v.error != null;
}
