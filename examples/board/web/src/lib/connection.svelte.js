// Connection state derived from the liveroom client's `status` store.
import { status } from 'liveroom';

export const connection = $state({ raw: 'connecting', everOpen: false, kind: 'connecting', label: 'Connecting…' });

status.subscribe((s) => {
  connection.raw = s;
  if (s === 'open') connection.everOpen = true;
  if (s === 'open') {
    connection.kind = 'open';
    connection.label = 'Connected';
  } else if (s === 'offline') {
    connection.kind = 'offline';
    connection.label = 'Offline';
  } else if (connection.everOpen) {
    connection.kind = 'reconnecting';
    connection.label = 'Reconnecting…';
  } else {
    connection.kind = 'connecting';
    connection.label = 'Connecting…';
  }
});
