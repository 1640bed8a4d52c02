/** Undo and redo over canvas snapshots; edits to one node's config within a moment are one step. */
import { useCallback, useRef, useState, type MutableRefObject } from 'react';
import type { Canvas } from './flowModel';

const MAX_HISTORY = 100;
const COALESCE_MS = 1500; // typing in one form is one undo step, not one per keystroke

export const snapshot = (c: Canvas): Canvas => ({
  nodes: c.nodes.map(({ selected: _s, dragging: _d, ...n }) => n),
  edges: c.edges.map(({ selected: _s, ...e }) => e),
});

export function useHistory(canvasRef: MutableRefObject<Canvas>, setCanvas: (update: (c: Canvas) => Canvas) => void) {
  const past = useRef<Canvas[]>([]);
  const future = useRef<Canvas[]>([]);
  const last = useRef({ key: '', at: 0 });
  const [size, setSize] = useState({ past: 0, future: 0 });

  /** Remember the canvas before an edit; edits with the same `coalesce` key close together are one step. */
  const record = useCallback(
    (coalesce?: string) => {
      const now = Date.now();
      if (coalesce && last.current.key === coalesce && now - last.current.at <= COALESCE_MS) {
        last.current.at = now;
        return;
      }
      last.current = { key: coalesce ?? '', at: now };
      past.current = [...past.current, snapshot(canvasRef.current)].slice(-MAX_HISTORY);
      future.current = [];
      setSize({ past: past.current.length, future: 0 });
    },
    [canvasRef],
  );
  const travel = useCallback(
    (from: MutableRefObject<Canvas[]>, to: MutableRefObject<Canvas[]>) => {
      const target = from.current.at(-1);
      if (!target) return;
      from.current = from.current.slice(0, -1);
      to.current = [...to.current, snapshot(canvasRef.current)];
      setCanvas(() => target);
      setSize({ past: past.current.length, future: future.current.length });
      last.current = { key: '', at: 0 };
    },
    [canvasRef, setCanvas],
  );
  const undo = useCallback(() => travel(past, future), [travel]);
  const redo = useCallback(() => travel(future, past), [travel]);
  const reset = useCallback(() => {
    past.current = [];
    future.current = [];
    setSize({ past: 0, future: 0 });
  }, []);
  return { record, undo, redo, reset, size };
}
