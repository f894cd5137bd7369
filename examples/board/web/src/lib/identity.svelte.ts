// Who am I: rpc me/get -> {id, name, color}; cookies lr_user / lr_name / lr_color as fallback.
import { get as getMe, update as updateMe } from '$live/me';
import { showError } from './toasts.svelte';

export function readCookie(name: string): string | null {
  for (const part of document.cookie.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    if (part.slice(0, i).trim() === name) {
      const raw = part.slice(i + 1).trim();
      try { return decodeURIComponent(raw); } catch { return raw; }
    }
  }
  return null;
}

export function writeCookie(name: string, value: string): void {
  document.cookie = `${name}=${encodeURIComponent(value)}; path=/; max-age=31536000; samesite=lax`;
}

export interface Me {
  id: string;
  name: string;
  color: string | null;
}

const cookieUser = readCookie('lr_user');

/**
 * `me`: who the server says I am. `shownColor`: the colour the open board shows me in (two
 * people never share one there, so it may differ from `me.color`), for the header to match.
 */
export const identity: { me: Me | null; loaded: boolean; shownColor: string | null } = $state({
  me: cookieUser
    ? { id: cookieUser, name: readCookie('lr_name') || 'You', color: readCookie('lr_color') }
    : null,
  loaded: false,
  shownColor: null,
});

let loading: Promise<void> | null = null;
export function loadMe(): Promise<void> {
  if (!loading) {
    loading = getMe()
      .then((me) => {
        if (me) identity.me = { ...me, id: String(me.id) };
      })
      .catch((err) => {
        loading = null;
        showError(err);
      })
      .finally(() => {
        identity.loaded = true;
      });
  }
  return loading;
}

export async function saveMe(name: string, color: string): Promise<void> {
  await updateMe(name, color);
  writeCookie('lr_name', name);
  writeCookie('lr_color', color);
  // Reconnect with the new identity cookies (presence data is taken at connect time).
  location.reload();
}
