// EDGE: the change feed over the WebSocket. The credential goes in as a subprotocol
// (`bearer.<credential>` beside `flowlens.v1`), never in the URL. Reconnects with
// back-off; after a reconnect or a `resync` the caller refetches, since events may
// have been missed.

import { credential } from './api.js';

export function connect({ onChange, onResync, onState, onRefused }) {
  let socket = null;
  let stopped = false;
  let delay = 500;
  const open = () => {
    if (stopped) return;
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/topology/ws`;
    try {
      socket = new WebSocket(url, ['flowlens.v1', `bearer.${credential()}`]);
    } catch {
      retry();
      return;
    }
    let hello = false;
    socket.onmessage = (m) => {
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch {
        return;
      }
      if (msg.type === 'hello') {
        if (delay > 500) onResync();
        hello = true;
        delay = 500;
        onState('live');
      } else if (msg.type === 'change' && msg.event) onChange(msg.event);
      else if (msg.type === 'resync') onResync();
    };
    socket.onclose = (ev) => {
      // 1008: the API closed it because the token expired or the key was revoked;
      // reconnecting would only resend a dead credential.
      if (ev.code === 1008) {
        stopped = true;
        onState('offline');
        onRefused();
        return;
      }
      onState(hello ? 'reconnecting' : 'offline');
      retry();
    };
  };
  const retry = () => {
    if (stopped) return;
    setTimeout(open, delay);
    delay = Math.min(delay * 2, 30000);
  };
  open();
  return () => {
    stopped = true;
    socket?.close();
  };
}
