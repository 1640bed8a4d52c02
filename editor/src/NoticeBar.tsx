/** The line under the toolbar: what just happened, or what was refused and why, with the located problems, and
 * after a deploy each gateway's answer. */
import type { Problem } from './types';

/** One gateway's answer to a deploy, as the notice lists it. */
export interface GatewayLine {
  id: string;
  name: string;
  result: 'APPLIED' | 'NOT_APPLIED' | 'PENDING';
  cause: string | null;
}

export type Notice = {
  kind: 'info' | 'warning' | 'error';
  text: string;
  code?: string;
  problems?: Problem[];
  gateways?: GatewayLine[];
} | null;

const RESULT_WORDS: Record<GatewayLine['result'], string> = {
  APPLIED: 'APPLIED',
  NOT_APPLIED: 'NOT APPLIED',
  PENDING: 'PENDING',
};

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
      {notice.gateways && notice.gateways.length > 0 && (
        <ul className="deploy-results" data-testid="deploy-results">
          {notice.gateways.map((g) => (
            <li key={g.id} data-testid={`deploy-result-${g.name}`} title={g.id}>
              <strong>{g.name}</strong>{' '}
              <span className={`sf-badge result-${g.result.toLowerCase()}`}>{RESULT_WORDS[g.result]}</span>
              {g.cause && <em> {g.cause}</em>}
            </li>
          ))}
        </ul>
      )}
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
