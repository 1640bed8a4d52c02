/** The audit trail: every state-changing action over REST and MCP, newest first — who, as which role, what, on
 * what, how it ended — filtered by who, channel or action, paged back by id. Engineers and Admins read it. */
import { useCallback, useState } from 'react';
import type { Api } from './api';
import { PageFrame, errorText, usePolling, type PageMessage } from './PageFrame';
import type { AuditRow } from './types';

const REFRESH_MS = 5000;
const PAGE = 200;

export function AuditPage({ api, onClose }: { api: Api; onClose: () => void }) {
  const [filters, setFilters] = useState({ identity: '', channel: '', tool: '' });
  const [rows, setRows] = useState<AuditRow[]>([]);
  const [older, setOlder] = useState<AuditRow[]>([]);
  const [message, setMessage] = useState<PageMessage>(null);

  const load = useCallback(async () => {
    try {
      setRows(await api.audit({ ...filters, limit: String(PAGE) }));
    } catch (err) {
      setMessage({ kind: 'error', text: `Audit: ${errorText(err)}` });
    }
  }, [api, filters]);
  usePolling(load, REFRESH_MS);

  const shown = [...rows, ...older.filter((row) => !rows.length || row.id < rows[rows.length - 1].id)];
  const more = async () => {
    const last = shown[shown.length - 1];
    if (!last) return;
    try {
      const page = await api.audit({ ...filters, limit: String(PAGE), before: String(last.id) });
      setOlder((old) => [...old, ...page]);
      if (page.length === 0) setMessage({ kind: 'info', text: 'That is the oldest entry.' });
    } catch (err) {
      setMessage({ kind: 'error', text: `Audit: ${errorText(err)}` });
    }
  };
  const filter = (name: keyof typeof filters, value: string) => {
    setOlder([]);
    setFilters({ ...filters, [name]: value });
  };

  return (
    <PageFrame title="Audit trail" testId="audit-page" onClose={onClose} message={message} onDismiss={() => setMessage(null)}>
      <form className="assign" onSubmit={(e) => e.preventDefault()}>
        <label>
          who <input value={filters.identity} onChange={(e) => filter('identity', e.target.value)} placeholder="alice" data-testid="audit-identity" />
        </label>
        <label>
          channel{' '}
          <select value={filters.channel} onChange={(e) => filter('channel', e.target.value)} data-testid="audit-channel">
            <option value="">any</option>
            <option value="rest">REST (editor, scripts)</option>
            <option value="mcp">MCP (agents)</option>
          </select>
        </label>
        <label>
          action{' '}
          <input value={filters.tool} onChange={(e) => filter('tool', e.target.value)} placeholder="POST /api/v1/flows/{flow}/deploy" size={34}
                 data-testid="audit-tool" />
        </label>
      </form>
      <table className="gateways audit">
        <thead>
          <tr>
            <th>When</th>
            <th>Who</th>
            <th>Role</th>
            <th>Via</th>
            <th>Action</th>
            <th>On</th>
            <th>Outcome</th>
            <th>Approved by</th>
          </tr>
        </thead>
        <tbody data-testid="audit-rows">
          {shown.map((row) => (
            <tr key={row.id} className={`outcome-${row.outcome}`} data-testid="audit-row" title={`arguments digest ${row.arguments_digest}`}>
              <td>{new Date(row.at).toLocaleString()}</td>
              <td>{row.identity}</td>
              <td>{row.role ?? '—'}</td>
              <td>{row.channel}</td>
              <td>
                <code>{row.tool}</code>
              </td>
              <td>{row.target ?? '—'}</td>
              <td>
                {row.outcome} {row.detail && <small>{row.detail}</small>}
              </td>
              <td>{row.approved_by ?? '—'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {shown.length === 0 ? (
        <p className="hint">Nothing matches.</p>
      ) : (
        <button onClick={() => void more()} data-testid="audit-older">
          Older entries
        </button>
      )}
    </PageFrame>
  );
}
