// What the status pill and the banner show, from the liveroom client's `connectionState` store:
// connecting, live, reconnecting (until the streams caught up), recovered (for a few seconds
// after), degraded (the server lost its Redis: changes made on other servers may be missing),
// failed (a terminal close; the error panels say why).
import { connectionState } from 'liveroom';

import type { ConnectionState } from 'liveroom';

const LABELS: Record<ConnectionState, string> = {
  connecting: 'Connecting…',
  live: 'Connected',
  reconnecting: 'Reconnecting…',
  recovered: 'Back online',
  degraded: 'Degraded',
  closed: 'Offline',
  failed: 'Offline',
};

const HINTS: Partial<Record<ConnectionState, string>> = {
  recovered: 'Reconnected: everything missed meanwhile is on screen',
  degraded: 'The server lost touch with the other servers: changes made there show up once it is back',
};

export const connection: { state: ConnectionState; label: string; hint: string } = $state({
  state: 'connecting',
  label: LABELS.connecting,
  hint: '',
});

connectionState.subscribe((s) => {
  connection.state = s;
  connection.label = LABELS[s];
  connection.hint = HINTS[s] ?? '';
});
