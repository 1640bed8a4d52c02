/** The DLQ workflow: refused readings with their reasons beside the decoded reading; an Operator approves a
 * selection, or re-validates all of a validator's letters with its current rules, and follows the job. */
import { useCallback, useState } from 'react';
import type { Api } from './api';
import { PageFrame, errorText, usePolling, type PageMessage } from './PageFrame';
import type { DeadLetter, DlqJob, DlqListing, Session } from './types';

const REFRESH_MS = 10_000; // each listing reads the gateways' DLQ topics: refreshed often enough, not more
const JOB_POLL_MS = 500;

const jobText = (job: DlqJob): string =>
  `job ${job.id} (${job.kind}, ${job.user}): ${job.state} · ${job.done}/${job.total} looked at · ${job.reprocessed} ` +
  `reprocessed · ${job.already} already · ${job.still_failing} still failing` + (job.error ? ` · ${job.error}` : '');

export function DlqPage({ api, session, onClose }: { api: Api; session: Session; onClose: () => void }) {
  const [listing, setListing] = useState<DlqListing | null>(null);
  const [filters, setFilters] = useState({ reason: '', node: '', asset: '' });
  const [chosen, setChosen] = useState<Set<string>>(new Set());
  const [shown, setShown] = useState<DeadLetter | null>(null);
  const [job, setJob] = useState<DlqJob | null>(null);
  const [message, setMessage] = useState<PageMessage>(null);
  const canAct = session.role !== 'viewer';

  const load = useCallback(async () => setListing(await api.dlq({ ...filters, limit: '500' })), [api, filters]);
  usePolling(load, REFRESH_MS);

  const follow = async (started: DlqJob) => {
    let now = started;
    setJob(now);
    while (now.state === 'RUNNING') {
      await new Promise((resolve) => window.setTimeout(resolve, JOB_POLL_MS));
      now = { ...(await api.dlqJob(started.gateway, started.id)), gateway: started.gateway };
      setJob(now);
    }
    setChosen(new Set());
    await load();
  };
  const run = async (start: () => Promise<DlqJob>) => {
    try {
      await follow(await start());
    } catch (err) {
      setMessage({ kind: 'error', text: `Refused: ${errorText(err)}` });
    }
  };
  const records = listing?.records ?? [];
  const validators = [...new Set(records.map((r) => `${r.flow}/${r.node}`))];
  const picked = records.filter((r) => chosen.has(r.id));
  const toggle = (id: string) =>
    setChosen((c) => {
      const next = new Set(c);
      if (!next.delete(id)) next.add(id);
      return next;
    });

  return (
    <PageFrame title="Dead-letter queue" testId="dlq-page" onClose={onClose} message={message} onDismiss={() => setMessage(null)}>
      <form className="assign" onSubmit={(e) => e.preventDefault()}>
        <label>
          Reason{' '}
          <select value={filters.reason} onChange={(e) => setFilters({ ...filters, reason: e.target.value })} data-testid="dlq-reason-filter">
            <option value="">all</option>
            {Object.keys(listing?.counts_by_reason ?? {}).map((code) => (
              <option key={code}>{code}</option>
            ))}
          </select>
        </label>
        <label>
          Node <input value={filters.node} onChange={(e) => setFilters({ ...filters, node: e.target.value })} placeholder="quality" />
        </label>
        <label>
          Asset <input value={filters.asset} onChange={(e) => setFilters({ ...filters, asset: e.target.value })} placeholder="pump_1" />
        </label>
        {canAct && (
          <button
            className="primary"
            disabled={picked.length === 0 || new Set(picked.map((r) => r.gateway)).size !== 1}
            onClick={() => void run(() => api.approveDlq(picked[0].gateway, picked.map((r) => r.id)))}
            data-testid="dlq-approve"
          >
            Approve {picked.length || ''} selected
          </button>
        )}
        {canAct &&
          validators.map((v) => (
            <button key={v} onClick={() => void run(() => api.revalidate(...(v.split('/') as [string, string])))}
                    data-testid={`dlq-revalidate-${v.replace('/', '-')}`} title="its letters that pass the validator's current rules go to clean">
              Re-validate all of {v}
            </button>
          ))}
      </form>
      <p className="hint" data-testid="dlq-counts">
        {listing ? `${listing.waiting} waiting of ${listing.total}` : 'loading…'}
        {Object.entries(listing?.counts_by_reason ?? {}).map(([code, n]) => (
          <span key={code} className="sf-badge" data-testid={`dlq-count-${code}`}>
            {code}: {n}
          </span>
        ))}
      </p>
      {job && <p className={`hint ${job.state === 'FAILED' ? 'error' : ''}`} data-testid="dlq-job">{jobText(job)}</p>}
      <div className="dlq-body">
        <table className="gateways">
          <thead>
            <tr>
              <th />
              <th>Failed at</th>
              <th>Node</th>
              <th>Asset</th>
              <th>Reasons</th>
              <th>Source</th>
              <th>Status</th>
            </tr>
          </thead>
          <tbody>
            {records.map((r) => (
              <tr key={`${r.gateway}/${r.id}`} data-testid={`dlq-${r.id}`} onClick={() => setShown(r)}
                  className={shown?.id === r.id ? 'selected' : ''}>
                <td onClick={(e) => e.stopPropagation()}>
                  <input type="checkbox" checked={chosen.has(r.id)} onChange={() => toggle(r.id)} disabled={!canAct || r.reprocessed !== null}
                         aria-label={`select ${r.id}`} />
                </td>
                <td>{new Date(r.failed_at).toLocaleTimeString()}</td>
                <td>
                  {r.flow}/{r.node}
                </td>
                <td>{r.asset_id ?? '—'}</td>
                <td data-testid="dlq-reasons">
                  {r.reasons.map((reason, i) => (
                    <div key={i}>
                      <strong>{reason.code}</strong> {reason.field ? <code>{reason.field}</code> : null} {reason.message}
                    </div>
                  ))}
                </td>
                <td>
                  {r.source_topic}/{r.source_partition ?? '?'}/{r.source_offset ?? '?'}
                </td>
                <td data-testid="dlq-status">{r.reprocessed ? `reprocessed (${r.reprocessed.kind}, job ${r.reprocessed.job})` : 'waiting'}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {shown && (
          <aside className="dlq-detail" data-testid="dlq-detail">
            <h3>{shown.id}</h3>
            <h4>Why it was refused</h4>
            <ul>
              {shown.reasons.map((reason, i) => (
                <li key={i}>
                  <strong>{reason.code}</strong> at <code>{reason.field ?? '(record)'}</code>: {reason.message}
                </li>
              ))}
            </ul>
            <h4>The reading</h4>
            <pre>{shown.reading ? JSON.stringify(shown.reading, null, 2) : `does not decode: ${shown.payload_error}`}</pre>
          </aside>
        )}
      </div>
      {listing && records.length === 0 && <p className="hint">No dead letter matches.</p>}
      {listing && Object.keys(listing.unreachable).length > 0 && (
        <p className="hint error">Not answering: {Object.entries(listing.unreachable).map(([g, why]) => `${g} (${why})`).join(', ')}</p>
      )}
    </PageFrame>
  );
}
