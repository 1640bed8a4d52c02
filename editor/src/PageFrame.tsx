/** The frame every page besides the canvas shares: the brand, the page's title, a way back, and its notice. */
import { useEffect, useRef, type ReactNode } from 'react';

export type PageMessage = { kind: 'info' | 'error'; text: string } | null;

export function PageFrame(props: {
  title: string;
  testId: string;
  onClose: () => void;
  message: PageMessage;
  onDismiss: () => void;
  children: ReactNode;
}) {
  const { message } = props;
  return (
    <div className="gateways-page" data-testid={props.testId}>
      <header className="toolbar">
        <strong className="brand">StreamForge</strong>
        <span>{props.title}</span>
        <span className="grow" />
        <button onClick={props.onClose} data-testid="back-to-flows">
          Back to flows
        </button>
      </header>
      {message && (
        <div className={`notice ${message.kind}`} role={message.kind === 'error' ? 'alert' : 'status'} data-testid="page-notice">
          <span>{message.text}</span>
          <button className="close" onClick={props.onDismiss} aria-label="dismiss">
            ×
          </button>
        </div>
      )}
      {props.children}
    </div>
  );
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Run `load` now and every `ms` until the page goes (a slow answer is never overlapped by the next call). */
export function usePolling(load: () => Promise<void>, ms: number): void {
  const latest = useRef(load);
  latest.current = load;
  useEffect(() => {
    let stopped = false;
    let timer = 0;
    const tick = async () => {
      try {
        await latest.current();
      } finally {
        if (!stopped) timer = window.setTimeout(() => void tick(), ms);
      }
    };
    void tick();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [ms]);
}
