/** The editor's keys: Ctrl+Z / Ctrl+Shift+Z / Ctrl+Y, Ctrl+C / Ctrl+V, Ctrl+S, Ctrl+A, and F to fit the view. */
import { useEffect, useRef } from 'react';

export interface Shortcuts {
  canEdit: boolean;
  undo: () => void;
  redo: () => void;
  copy: () => void;
  paste: () => void;
  save: () => Promise<unknown>;
  selectAll: () => void;
  fit: () => void;
}

export function useShortcuts(shortcuts: Shortcuts): void {
  const latest = useRef(shortcuts); // one listener for the page's life, always calling the current handlers
  latest.current = shortcuts;
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const target = event.target as HTMLElement;
      if (target.closest('input, textarea, select, [contenteditable="true"]')) return;
      const s = latest.current;
      const mod = event.ctrlKey || event.metaKey;
      const key = event.key.toLowerCase();
      const actions: Record<string, () => void> = {
        z: event.shiftKey ? s.redo : s.undo,
        y: s.redo,
        c: s.copy,
        v: s.paste,
        s: () => void s.save(),
        a: s.selectAll,
      };
      if (mod && actions[key]) {
        event.preventDefault();
        if (s.canEdit || key === 'c' || key === 'a') actions[key]();
      } else if (!mod && key === 'f') {
        s.fit();
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, []);
}
