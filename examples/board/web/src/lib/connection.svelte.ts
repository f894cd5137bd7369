// Connection state derived from the liveroom client's `status` store.
import { status } from 'liveroom';

import type { ConnectionStatus } from 'liveroom';

export const connection: {
  raw: ConnectionStatus;
  everOpen: boolean;
  kind: 'connecting' | 'open' | 'reconnecting';
  label: string;
} = $state({ raw: 'connecting', everOpen: false, kind: 'connecting', label: 'Connecting…' });

status.subscribe((s) => {
  connection.raw = s;
  if (s === 'open') connection.everOpen = true;
  if (s === 'open') {
    connection.kind = 'open';
    connection.label = 'Connected';
  } else if (connection.everOpen) {
    connection.kind = 'reconnecting';
    connection.label = 'Reconnecting…';
  } else {
    connection.kind = 'connecting';
    connection.label = 'Connecting…';
  }
});
