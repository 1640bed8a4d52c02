/** The live connection as React state: the gateway's status, and the debug taps with the records they sample. */
import { useCallback, useEffect, useRef, useState } from 'react';
import { LiveSocket } from './live';
import type { GatewayStatus, TapRecord } from './types';
import type { Notice } from './NoticeBar';

const MAX_RECORDS = 200;

export function useLive(token: string, onSignOut: () => void, notify: (notice: Notice) => void) {
  const [gateway, setGateway] = useState<GatewayStatus | null>(null);
  const [connected, setConnected] = useState(false);
  const [records, setRecords] = useState<TapRecord[]>([]);
  const [taps, setTaps] = useState<string[]>([]); // confirmed by the server, never just asked for
  const live = useRef<LiveSocket | null>(null);

  useEffect(() => {
    const socket = new LiveSocket(token, {
      status: setGateway,
      record: (r) => setRecords((rs) => [r, ...rs].slice(0, MAX_RECORDS)),
      tapped: (key, topic) => {
        setTaps((t) => (t.includes(key) ? t : [...t, key]));
        notify({ kind: 'info', text: `tapping ${key} (${topic})` });
      },
      refused: (key, message) => {
        setTaps((t) => t.filter((k) => k !== key));
        notify({ kind: 'error', text: `Tap refused: ${message}` });
      },
      notice: (text) => notify({ kind: 'info', text }),
      connected: setConnected,
      unauthorized: onSignOut,
    });
    live.current = socket;
    return () => socket.close();
  }, [token, onSignOut, notify]);

  const tap = useCallback((flow: string, node: string, port: string) => live.current?.tap(flow, node, port), []);
  /** Stop every tap and drop what they sampled (switching flows, or the Stop button). */
  const stopTaps = useCallback(() => {
    live.current?.untapAll();
    setTaps([]);
    setRecords([]);
  }, []);
  const clearRecords = useCallback(() => setRecords([]), []);
  return { gateway, connected, records, taps, tap, stopTaps, clearRecords };
}
