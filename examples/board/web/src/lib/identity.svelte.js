// Who am I: rpc me/get -> {id, name, color}; cookies lr_user / lr_name / lr_color as fallback.
import { get as getMe, update as updateMe } from '$live/me';
import { showError } from './toasts.svelte.js';

export function readCookie(name) {
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

export function writeCookie(name, value) {
  document.cookie = `${name}=${encodeURIComponent(value)}; path=/; max-age=31536000; samesite=lax`;
}

export const identity = $state({
  me: readCookie('lr_user')
    ? { id: readCookie('lr_user'), name: readCookie('lr_name') || 'You', color: readCookie('lr_color') }
    : null,
  loaded: false,
});

let loading = null;
export function loadMe() {
  if (!loading) {
    loading = getMe()
      .then((me) => {
        if (me && typeof me === 'object') identity.me = { ...me, id: me.id == null ? null : String(me.id) };
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

export async function saveMe(name, color) {
  await updateMe(name, color);
  writeCookie('lr_name', name);
  writeCookie('lr_color', color);
  // Reconnect with the new identity cookies (presence data is taken at connect time).
  location.reload();
}
