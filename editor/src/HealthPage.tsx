/** Health: the spec's roll-up per gateway (Kafka, disk, every node as HEALTHY / DEGRADED / UNHEALTHY / FAILED) with
 * each node's rates, lag, restarts and last error; an Operator restarts a node from here. */
import { useCallback, useState } from 'react';
import type { Api } from './api';
import { PageFrame, errorText, usePolling, type PageMessage } from './PageFrame';
import type { HealthReport, Session } from './types';

const REFRESH_MS = 2000;
const perSecond = (value: number | undefined): string => (value === undefined ? '—' : `${value.toFixed(1)}/s`);

export function HealthPage({ api, session, onClose }: { api: Api; session: Session; onClose: () => void }) {
  const [report, setReport] = useState<HealthReport | null>(null);
  const [message, setMessage] = useState<PageMessage>(null);
  const canAct = session.role !== 'viewer';
  const load = useCallback(async () => setReport(await api.health()), [api]);
  usePolling(load, REFRESH_MS);

  const restart = async (component: string) => {
    const [flow, node] = component.split('/');
    try {
      const done = await api.restart(flow, node);
      setMessage({ kind: 'info', text: `Restarted ${component}: now ${done.now}` });
    } catch (err) {
      setMessage({ kind: 'error', text: `Restart ${component}: ${errorText(err)}` });
    }
  };
  return (
    <PageFrame title="Health" testId="health-page" onClose={onClose} message={message} onDismiss={() => setMessage(null)}>
      <p className="hint">
        Overall <span className={`sf-badge status-${(report?.status ?? 'none').toLowerCase()}`} data-testid="health-overall">{report?.status ?? '…'}</span>
        {report && ` · ${report.alarms.unacknowledged} unacknowledged alarms`}
      </p>
      {report?.gateways.map((g) => (
        <section key={g.gateway} data-testid={`health-${g.name}`}>
          <h3>
            {g.name} <small>{g.gateway}</small> <span className={`sf-badge status-${g.status.toLowerCase()}`}>{g.status}</span>
          </h3>
          <table className="gateways">
            <thead>
              <tr>
                <th>Component</th>
                <th>Health</th>
                <th>In</th>
                <th>Out</th>
                <th>Lag</th>
                <th>Restarts</th>
                <th>Last error</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {g.components.map((c) => (
                <tr key={c.component} data-testid={`component-${c.component}`}>
                  <td>
                    {c.component}
                    {c.type && <small> ({c.type})</small>}
                  </td>
                  <td>
                    <span className={`sf-badge status-${c.status.toLowerCase()}`}>{c.status}</span>
                    {c.node_status && c.node_status !== 'RUNNING' && <small> {c.node_status}</small>}
                    {c.detail && <small> {c.detail}</small>}
                  </td>
                  <td data-testid="rate-in">{perSecond(c.in_per_s)}</td>
                  <td data-testid="rate-out">{perSecond(c.out_per_s)}</td>
                  <td>{c.lag ?? '—'}</td>
                  <td>{c.restarts ?? '—'}</td>
                  <td className="error">{c.last_error ?? ''}</td>
                  <td>
                    {canAct && c.type && (
                      <button onClick={() => void restart(c.component)} data-testid="restart">
                        Restart
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ))}
    </PageFrame>
  );
}
