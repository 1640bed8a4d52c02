/** Logs of every gateway process and worker, from the gateways' rings: filter by level, component, flow, node and
 * text, and follow new lines as they come. */
import { useCallback, useRef, useState } from 'react';
import type { Api } from './api';
import { PageFrame, errorText, usePolling, type PageMessage } from './PageFrame';
import type { LogLine } from './types';

const FOLLOW_MS = 2000;
const KEPT = 2000;
const SHOWN_FIELDS = new Set(['timestamp', 'level', 'component', 'gateway_id', 'gateway', 'message', 'logger', 'flow', 'node']);

const extras = (line: LogLine): string =>
  Object.entries(line)
    .filter(([key]) => !SHOWN_FIELDS.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');

export function LogsPage({ api, onClose }: { api: Api; onClose: () => void }) {
  const [filters, setFilters] = useState({ level: 'INFO', component: '', flow: '', node: '', q: '' });
  const [lines, setLines] = useState<LogLine[]>([]);
  const [following, setFollowing] = useState(true);
  const [message, setMessage] = useState<PageMessage>(null);
  const shownFor = useRef('');

  const load = useCallback(async () => {
    const key = JSON.stringify(filters);
    const fresh = shownFor.current !== key; // new filters: start over, else only what came since
    const since = !fresh && lines.length ? lines[lines.length - 1].timestamp : '';
    if (!fresh && !following) return;
    try {
      const answer = await api.logs({ ...filters, since, limit: '500' });
      shownFor.current = key;
      setLines((old) => (fresh ? answer.lines : [...old, ...answer.lines]).slice(-KEPT));
    } catch (err) {
      setMessage({ kind: 'error', text: `Logs: ${errorText(err)}` });
    }
  }, [api, filters, following, lines]);
  usePolling(load, FOLLOW_MS);

  const field = (name: keyof typeof filters, placeholder: string) => (
    <label>
      {name}{' '}
      <input value={filters[name]} onChange={(e) => setFilters({ ...filters, [name]: e.target.value })} placeholder={placeholder}
             data-testid={`logs-${name}`} />
    </label>
  );
  return (
    <PageFrame title="Logs" testId="logs-page" onClose={onClose} message={message} onDismiss={() => setMessage(null)}>
      <form className="assign" onSubmit={(e) => e.preventDefault()}>
        <label>
          level{' '}
          <select value={filters.level} onChange={(e) => setFilters({ ...filters, level: e.target.value })} data-testid="logs-level">
            {['DEBUG', 'INFO', 'WARNING', 'ERROR'].map((l) => (
              <option key={l}>{l}</option>
            ))}
          </select>
        </label>
        {field('component', 'worker:press')}
        {field('flow', 'demo')}
        {field('node', 'press')}
        {field('q', 'text')}
        <label>
          <input type="checkbox" checked={following} onChange={(e) => setFollowing(e.target.checked)} /> follow
        </label>
      </form>
      <table className="gateways logs">
        <thead>
          <tr>
            <th>Time</th>
            <th>Level</th>
            <th>Component</th>
            <th>Flow / node</th>
            <th>Message</th>
          </tr>
        </thead>
        <tbody data-testid="log-lines">
          {lines.map((line, index) => (
            <tr key={`${line.timestamp}-${index}`} className={`level-${String(line.level).toLowerCase()}`} data-testid="log-line">
              <td>{new Date(line.timestamp).toLocaleTimeString()}</td>
              <td>{line.level}</td>
              <td>{line.component}</td>
              <td>{line.flow ? `${line.flow}/${line.node ?? ''}` : '—'}</td>
              <td>
                {line.message} <small>{extras(line)}</small>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {lines.length === 0 && <p className="hint">No line matches.</p>}
    </PageFrame>
  );
}
