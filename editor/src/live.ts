/** The live websocket: one gateway's status every second (the gateway the view is on, for the flow on screen) and
 * debug taps on that gateway; reconnects with backoff until closed, re-sending what it asked for. */
import type { GatewayStatus, TapRecord } from './types';

type PortRef = { flow: string; node: string; port: string };
type TapRef = PortRef & { gateway?: string };

/** What status is wanted: of `gateway`, or (none named) of the gateway running `flow`. */
export interface Subscription {
  flow: string | null;
  gateway: string | null;
}

type LiveMessage =
  | ({ type: 'status' } & GatewayStatus)
  | ({ type: 'record' } & TapRecord)
  | ({ type: 'tapped'; topic: string; gateway?: string } & PortRef)
  | ({ type: 'untapped' } & PortRef)
  | ({ type: 'tap_refused'; message: string } & PortRef)
  | { type: 'error'; message: string };

export interface LiveHandlers {
  status: (status: GatewayStatus) => void;
  record: (record: TapRecord) => void;
  /** The server started a tap (`key` is flow/node:port), or refused it with why. */
  tapped: (key: string, topic: string, gateway: string | null) => void;
  refused: (key: string, message: string) => void;
  notice: (text: string) => void;
  connected: (up: boolean) => void;
  unauthorized: () => void;
}

const UNAUTHORIZED = 4401;

export const tapKey = (flow: string, node: string, port: string): string => `${flow}/${node}:${port}`;

export class LiveSocket {
  private socket: WebSocket | null = null;
  private taps = new Map<string, TapRef>(); // asked for, re-sent after a reconnect
  private subscription: Subscription = { flow: null, gateway: null };
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
      socket.send(JSON.stringify(this.subscribeMessage()));
      for (const tap of this.taps.values()) socket.send(JSON.stringify({ tap }));
    };
    socket.onmessage = (event: MessageEvent<string>) => {
      const message = JSON.parse(event.data) as LiveMessage;
      if (message.type === 'status') {
        // A second of what was subscribed before may still be on its way when the user picks another: not shown.
        const wanted = this.subscription.gateway;
        if (wanted === null || message.gateway === wanted) this.on.status(message);
      } else if (message.type === 'record') {
        if (this.taps.has(tapKey(message.flow, message.node, message.port))) this.on.record(message);
      } else if (message.type === 'tapped') {
        this.on.tapped(tapKey(message.flow, message.node, message.port), message.topic, message.gateway ?? null);
      } else if (message.type === 'tap_refused') {
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

  private subscribeMessage(): Record<string, string> {
    const { flow, gateway } = this.subscription;
    return { subscribe: 'status', ...(flow ? { flow } : {}), ...(gateway ? { gateway } : {}) };
  }

  /** Status of another gateway or flow from now on (the server replaces the subscription it had). */
  subscribe(subscription: Subscription): void {
    if (subscription.flow === this.subscription.flow && subscription.gateway === this.subscription.gateway) return;
    this.subscription = subscription;
    this.send(this.subscribeMessage());
  }

  /** Tap one output port on `gateway` (none named: the gateway running the flow). */
  tap(flow: string, node: string, port: string, gateway: string | null): void {
    const ref: TapRef = { flow, node, port, ...(gateway ? { gateway } : {}) };
    this.taps.set(tapKey(flow, node, port), ref);
    this.send({ tap: ref });
  }

  /** Stop every tap: records of them stop at once (late ones in flight are dropped here). */
  untapAll(): void {
    for (const { flow, node, port } of this.taps.values()) this.send({ untap: { flow, node, port } });
    this.taps.clear();
  }

  close(): void {
    this.closed = true;
    this.socket?.close();
  }
}
