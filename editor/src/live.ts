/** The live websocket: gateway status every second and debug taps; reconnects with backoff until closed. */
import type { GatewayStatus, TapRecord } from './types';

type PortRef = { flow: string; node: string; port: string };

type LiveMessage =
  | ({ type: 'status' } & GatewayStatus)
  | ({ type: 'record' } & TapRecord)
  | ({ type: 'tapped'; topic: string } & PortRef)
  | ({ type: 'untapped' } & PortRef)
  | ({ type: 'tap_refused'; message: string } & PortRef)
  | { type: 'error'; message: string };

export interface LiveHandlers {
  status: (status: GatewayStatus) => void;
  record: (record: TapRecord) => void;
  /** The server started a tap (`key` is flow/node:port), or refused it with why. */
  tapped: (key: string, topic: string) => void;
  refused: (key: string, message: string) => void;
  notice: (text: string) => void;
  connected: (up: boolean) => void;
  unauthorized: () => void;
}

const UNAUTHORIZED = 4401;

export const tapKey = (flow: string, node: string, port: string): string => `${flow}/${node}:${port}`;

export class LiveSocket {
  private socket: WebSocket | null = null;
  private taps = new Map<string, PortRef>(); // asked for, re-sent after a reconnect
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
      for (const tap of this.taps.values()) socket.send(JSON.stringify({ tap }));
    };
    socket.onmessage = (event: MessageEvent<string>) => {
      const message = JSON.parse(event.data) as LiveMessage;
      if (message.type === 'status') this.on.status(message);
      else if (message.type === 'record') {
        if (this.taps.has(tapKey(message.flow, message.node, message.port))) this.on.record(message);
      } else if (message.type === 'tapped') this.on.tapped(tapKey(message.flow, message.node, message.port), message.topic);
      else if (message.type === 'tap_refused') {
        const key = tapKey(message.flow, message.node, message.port);
        this.taps.delete(key);
        this.on.refused(key, message.message);
      } else if (message.type === 'error') this.on.notice(message.message);
    };
    socket.onclose = (event) => {
      this.on.connected(false);
      if (event.code === UNAUTHORIZED) return this.on.unauthorized();
      if (!this.closed) setTimeout(() => this.open(), (this.retryMs = Math.min(this.retryMs * 2, 10_000)));
    };
  }

  private send(message: unknown): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  tap(flow: string, node: string, port: string): void {
    const ref = { flow, node, port };
    this.taps.set(tapKey(flow, node, port), ref);
    this.send({ tap: ref });
  }

  /** Stop every tap: records of them stop at once (late ones in flight are dropped here). */
  untapAll(): void {
    for (const ref of this.taps.values()) this.send({ untap: ref });
    this.taps.clear();
  }

  close(): void {
    this.closed = true;
    this.socket?.close();
  }
}
