/** The live connection as React state: the status of the gateway the view is on, and the debug taps with the
 * records they sample. */
import { useCallback, useEffect, useRef, useState } from 'react';
import { LiveSocket, type Subscription } from './live';
import type { GatewayStatus, TapRecord } from './types';
import type { Notice } from './NoticeBar';

const MAX_RECORDS = 200;

export function useLive(token: string, onSignOut: () => void, notify: (notice: Notice) => void) {
  const [gateway, setGateway] = useState<GatewayStatus | null>(null);
  const [connected, setConnected] = useState(false);
  const [records, setRecords] = useState<TapRecord[]>([]);
  const [taps, setTaps] = useState<string[]>([]); // confirmed by the server, never just asked for
  const live = useRef<LiveSocket | null>(null);
  const wanted = useRef<Subscription>({ flow: null, gateway: null }); // kept for a socket made afresh
  const names = useRef(new Map<string, string>()); // gateway id → name, from the status messages seen

  useEffect(() => {
    const socket = new LiveSocket(token, {
      status: (status) => {
        if (status.gateway && status.name) names.current.set(status.gateway, status.name);
        setGateway(status);
      },
      record: (r) => setRecords((rs) => [r, ...rs].slice(0, MAX_RECORDS)),
      tapped: (key, topic, on) => {
        setTaps((t) => (t.includes(key) ? t : [...t, key]));
        const where = on ? ` on ${names.current.get(on) ?? on}` : '';
        notify({ kind: 'info', text: `tapping ${key}${where} (${topic})` });
      },
      refused: (key, message) => {
        setTaps((t) => t.filter((k) => k !== key));
        notify({ kind: 'error', text: `Tap refused: ${message}` });
      },
      notice: (text) => notify({ kind: 'info', text }),
      connected: setConnected,
      unauthorized: onSignOut,
    });
    socket.subscribe(wanted.current);
    live.current = socket;
    return () => socket.close();
  }, [token, onSignOut, notify]);

  /** Status of `gateway` running `flow` (null: whichever runs it; none yet is a quiet "not running"). */
  const subscribe = useCallback((flow: string | null, gateway: string | null) => {
    wanted.current = { flow, gateway };
    live.current?.subscribe(wanted.current);
  }, []);
  const tap = useCallback(
    (flow: string, node: string, port: string, gateway: string | null) => live.current?.tap(flow, node, port, gateway),
    [],
  );
  /** Stop every tap and drop what they sampled (switching flows, or the Stop button). */
  const stopTaps = useCallback(() => {
    live.current?.untapAll();
    setTaps([]);
    setRecords([]);
  }, []);
  const clearRecords = useCallback(() => setRecords([]), []);
  return { gateway, connected, records, taps, subscribe, tap, stopTaps, clearRecords };
}
