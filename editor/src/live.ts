/** The live websocket: gateway status every second and debug taps; reconnects with backoff until closed. */
import type { GatewayStatus, TapRecord } from './types';

type LiveMessage =
  | ({ type: 'status' } & GatewayStatus)
  | ({ type: 'record' } & TapRecord)
  | { type: 'tapped'; flow: string; node: string; port: string; topic: string }
  | { type: 'error'; message: string };

export interface LiveHandlers {
  status: (status: GatewayStatus) => void;
  record: (record: TapRecord) => void;
  notice: (text: string) => void;
  connected: (up: boolean) => void;
  unauthorized: () => void;
}

const UNAUTHORIZED = 4401;

export class LiveSocket {
  private socket: WebSocket | null = null;
  private taps = new Set<string>();
  private closed = false;
  private retryMs = 500;

  constructor(
    private readonly token: string,
    private readonly on: LiveHandlers,
  ) {
    this.open();
  }

  private open(): void {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/live?token=${encodeURIComponent(this.token)}`);
    this.socket = socket;
    socket.onopen = () => {
      this.retryMs = 500;
      this.on.connected(true);
      socket.send(JSON.stringify({ subscribe: 'status' }));
      for (const tap of this.taps) socket.send(tap);
    };
    socket.onmessage = (event: MessageEvent<string>) => {
      const message = JSON.parse(event.data) as LiveMessage;
      if (message.type === 'status') this.on.status(message);
      else if (message.type === 'record') this.on.record(message);
      else if (message.type === 'tapped') this.on.notice(`tapping ${message.node}:${message.port} (${message.topic})`);
      else if (message.type === 'error') this.on.notice(message.message);
    };
    socket.onclose = (event) => {
      this.on.connected(false);
      if (event.code === UNAUTHORIZED) return this.on.unauthorized();
      if (!this.closed) setTimeout(() => this.open(), (this.retryMs = Math.min(this.retryMs * 2, 10_000)));
    };
  }

  tap(flow: string, node: string, port: string): void {
    const message = JSON.stringify({ tap: { flow, node, port } });
    this.taps.add(message);
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(message);
  }

  close(): void {
    this.closed = true;
    this.socket?.close();
  }
}
