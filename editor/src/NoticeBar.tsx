/** The line under the toolbar: what just happened, or what was refused and why, with the located problems. */
import type { Problem } from './types';

export type Notice = { kind: 'info' | 'error'; text: string; code?: string; problems?: Problem[] } | null;

export function NoticeBar(props: { notice: Notice; onReload: (() => void) | null; onDismiss: () => void }) {
  const { notice } = props;
  if (!notice) return null;
  return (
    <div className={`notice ${notice.kind}`} role={notice.kind === 'error' ? 'alert' : 'status'} data-testid="notice">
      <span>{notice.text}</span>
      {notice.problems?.map((p, i) => (
        <div key={i} className="problem-line">
          <code>{p.pointer ?? '/'}</code> {p.message} {p.hint && <em>— {p.hint}</em>}
        </div>
      ))}
      {notice.code === 'version_conflict' && props.onReload && (
        <button onClick={props.onReload} data-testid="reload">
          Reload (drops your edits)
        </button>
      )}
      <button className="close" onClick={props.onDismiss} aria-label="dismiss">
        ×
      </button>
    </div>
  );
}
