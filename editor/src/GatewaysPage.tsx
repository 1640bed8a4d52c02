/** The fleet: every gateway with its approval, health and running versions; approve, replace, reject, delete, assign,
 * roll back. */
import { useCallback, useEffect, useState } from 'react';
import { ApiError, type Api } from './api';
import { PageFrame, type PageMessage } from './PageFrame';
import type { DiskReport, FlowSummary, FlowVersion, GatewaySummary, Session } from './types';

const REFRESH_MS = 2000;

const versionsText = (flows: Record<string, number>): string =>
  Object.entries(flows)
    .map(([flow, version]) => `${flow} v${version}`)
    .join(', ') || '—';

/** "64% · EVICT · 1,200 evicted": the disk budget's use, tier and what it evicted so far. */
function diskText(disk: DiskReport | null): string {
  if (!disk) return '—';
  const used = disk.used_fraction ?? (disk.total ? disk.used / disk.total : 0);
  const evicted = Object.values(disk.evicted ?? {}).reduce((a, b) => a + b, 0);
  return [`${Math.round(used * 100)}%`, disk.tier, evicted ? `${evicted.toLocaleString()} evicted` : null]
    .filter(Boolean)
    .join(' · ');
}

const ago = (at: number | null): string => (at === null ? 'never' : `${Math.max(0, Math.round(Date.now() / 1000 - at))} s ago`);

function parseLabels(text: string): Record<string, string> | null {
  const labels: Record<string, string> = {};
  for (const item of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [key, value] = item.split('=');
    if (!key || !value) return null;
    labels[key] = value;
  }
  return Object.keys(labels).length ? labels : null;
}

export function GatewaysPage({ api, session, onClose }: { api: Api; session: Session; onClose: () => void }) {
  const [gateways, setGateways] = useState<GatewaySummary[]>([]);
  const [flows, setFlows] = useState<FlowSummary[]>([]);
  const [message, setMessage] = useState<PageMessage>(null);
  const isAdmin = session.role === 'admin';
  const canAssign = isAdmin || session.role === 'engineer';

  const refresh = useCallback(async () => {
    setGateways(await api.gateways());
  }, [api]);
  useEffect(() => {
    void refresh();
    void api.flows().then(setFlows);
    const timer = window.setInterval(() => void refresh().catch(() => undefined), REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [api, refresh]);

  const act = async (what: string, action: () => Promise<unknown>) => {
    try {
      await action();
      setMessage({ kind: 'info', text: `${what}: done` });
      await refresh();
    } catch (err) {
      setMessage({ kind: 'error', text: `${what}: ${err instanceof ApiError ? err.message : String(err)}` });
    }
  };

  const nameOf = (id: string) => gateways.find((g) => g.id === id)?.name ?? id;
  const pending = gateways.filter((g) => g.status === 'pending');

  return (
    <PageFrame title="Gateways" testId="gateways-page" onClose={onClose} message={message} onDismiss={() => setMessage(null)}>
      {isAdmin && pending.length > 0 && (
        <p className="bulk">
          <button
            onClick={() => void act(`Reject ${pending.length} pending`, () => api.rejectPending(pending.map((g) => g.id)))}
            data-testid="reject-all-pending"
          >
            Reject all pending ({pending.length})
          </button>
        </p>
      )}
      {canAssign && (
        <AssignForm api={api} flows={flows} gateways={gateways} onAssign={(what, run) => void act(what, run)} />
      )}
      <table className="gateways">
        <thead>
          <tr>
            <th>Name</th>
            <th>Approval</th>
            <th>Health</th>
            <th>Labels</th>
            <th>Running</th>
            <th>Before</th>
            <th>Last apply</th>
            <th>Disk</th>
            <th>Last seen</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {gateways.map((g) => (
            <tr key={g.id} data-testid={`gateway-${g.name}`}>
              <td>
                {g.name}
                <br />
                <small>{g.id}</small>
                {g.claims && (
                  <div className="error" data-testid="claims" title="It cannot prove it is that gateway: replace that gateway with it only if you rebuilt it">
                    claims the instance id of gateway {nameOf(g.claims)} ({g.claims})
                  </div>
                )}
                {g.replaced_by && <div data-testid="replaced-by">replaced by {nameOf(g.replaced_by)}</div>}
              </td>
              <td data-testid="approval">{g.status}</td>
              <td>
                <span className={`sf-badge status-${g.health.toLowerCase()}`} data-testid="health">
                  {g.health}
                </span>
              </td>
              <td>{Object.entries(g.labels).map(([k, v]) => `${k}=${v}`).join(', ') || '—'}</td>
              <td data-testid="running">{versionsText(g.running)}</td>
              <td>{versionsText(g.previous)}</td>
              <td data-testid="last-apply">
                {g.last_apply ? (
                  <span className={g.last_apply.result === 'APPLIED' ? '' : 'error'} title={g.last_apply.cause ?? ''}>
                    {g.last_apply.result}
                    {g.last_apply.node ? ` (node ${g.last_apply.node})` : ''}
                  </span>
                ) : (
                  '—'
                )}
              </td>
              <td data-testid="disk" className={g.disk?.tier && g.disk.tier !== 'NORMAL' ? 'error' : ''}
                title={g.disk?.producers_blocked ? 'producers blocked: readings wait at the devices' : ''}>
                {diskText(g.disk)}
              </td>
              <td>{ago(g.last_seen)}</td>
              <td className="actions">
                {isAdmin && g.claims && g.status !== 'rejected' && (
                  <button
                    className="primary"
                    onClick={() => void act(`Replace ${nameOf(g.claims!)} with ${g.id}`, () => api.replaceGateway(g.id, g.claims!))}
                    data-testid="replace"
                  >
                    Replace {nameOf(g.claims)}
                  </button>
                )}
                {isAdmin && !g.claims && (g.status === 'pending' || g.status === 'rejected') && (
                  <button className="primary" onClick={() => void act(`Approve ${g.name}`, () => api.decide(g.id, 'approve'))}>
                    Approve
                  </button>
                )}
                {isAdmin && g.status === 'pending' && (
                  <button onClick={() => void act(`Reject ${g.name}`, () => api.decide(g.id, 'reject'))} data-testid="reject">
                    Reject
                  </button>
                )}
                {isAdmin && g.status !== 'approved' && (
                  <button onClick={() => void act(`Delete ${g.name}`, () => api.deleteGateway(g.id))} data-testid="delete">
                    Delete
                  </button>
                )}
                {canAssign && g.status === 'approved' && (
                  <button
                    onClick={() => void act(`Roll back ${g.name}`, () => api.rollback(g.id))}
                    disabled={Object.keys(g.previous).length === 0}
                    data-testid="rollback"
                  >
                    Roll back
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {gateways.length === 0 && <p className="hint">No gateway has registered yet: start one with streamforge gateway --control-plane URL.</p>}
    </PageFrame>
  );
}

function AssignForm({
  api,
  flows,
  gateways,
  onAssign,
}: {
  api: Api;
  flows: FlowSummary[];
  gateways: GatewaySummary[];
  onAssign: (what: string, run: () => Promise<unknown>) => void;
}) {
  const [flow, setFlow] = useState('');
  const [versions, setVersions] = useState<FlowVersion[]>([]);
  const [version, setVersion] = useState(0);
  const [target, setTarget] = useState('');
  const [labels, setLabels] = useState('');
  useEffect(() => {
    if (!flow) return;
    void api.versions(flow).then((list) => {
      setVersions(list);
      setVersion(list.length ? list[list.length - 1].version : 0);
    });
  }, [api, flow]);
  const selector = parseLabels(labels);
  const ready = flow && version && (target ? true : selector !== null);
  return (
    <form
      className="assign"
      onSubmit={(e) => {
        e.preventDefault();
        const where = target ? { gateway: target } : { labels: selector ?? {} };
        onAssign(`Assign ${flow} v${version}`, () => api.assign(flow, version, where));
      }}
    >
      <label>
        Flow{' '}
        <select value={flow} onChange={(e) => setFlow(e.target.value)} data-testid="assign-flow">
          <option value="">choose…</option>
          {flows.map((f) => (
            <option key={f.id} value={f.id}>
              {f.id}
            </option>
          ))}
        </select>
      </label>
      <label>
        Version{' '}
        <select value={version} onChange={(e) => setVersion(Number(e.target.value))} data-testid="assign-version">
          {versions.map((v) => (
            <option key={v.version} value={v.version}>
              v{v.version}
            </option>
          ))}
        </select>
      </label>
      <label>
        to gateway{' '}
        <select value={target} onChange={(e) => setTarget(e.target.value)} data-testid="assign-gateway">
          <option value="">— or by labels —</option>
          {gateways
            .filter((g) => g.status === 'approved')
            .map((g) => (
              <option key={g.id} value={g.id}>
                {g.name}
              </option>
            ))}
        </select>
      </label>
      <label>
        labels{' '}
        <input
          value={labels}
          onChange={(e) => setLabels(e.target.value)}
          placeholder="site=north"
          disabled={Boolean(target)}
          data-testid="assign-labels"
        />
      </label>
      <button className="primary" type="submit" disabled={!ready} data-testid="assign">
        Assign
      </button>
    </form>
  );
}
