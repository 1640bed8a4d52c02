/** Alarms: each alarm's latest state, most urgent first, updating live; an Operator acknowledges, shelves,
 * suppresses or takes an alarm out of service, always naming the event seen (a stale one is refused). */
import { useCallback, useState } from 'react';
import { ApiError, type Api } from './api';
import { PageFrame, errorText, usePolling, type PageMessage } from './PageFrame';
import type { Alarm, AlarmCounts, Session } from './types';

const REFRESH_MS = 500;
const STATES = ['ACTIVE', 'RTN_UNACK', 'ACKNOWLEDGED', 'CLEARED', 'SHELVED', 'SUPPRESSED', 'OUT_OF_SERVICE'];
const SHELVE_FOR: [string, number | 'one_shot'][] = [
  ['1 min', 60],
  ['10 min', 600],
  ['1 h', 3600],
  ['8 h', 28800],
  ['until it clears', 'one_shot'],
];

const when = (iso: string | null): string => (iso ? new Date(iso).toLocaleTimeString() : '—');

export function AlarmsPage({ api, session, onClose }: { api: Api; session: Session; onClose: () => void }) {
  const [alarms, setAlarms] = useState<Alarm[]>([]);
  const [counts, setCounts] = useState<AlarmCounts | null>(null);
  const [filters, setFilters] = useState({ state: '', severity: '', asset: '' });
  const [shelveFor, setShelveFor] = useState(0);
  const [message, setMessage] = useState<PageMessage>(null);
  const canAct = session.role !== 'viewer';

  const load = useCallback(async () => {
    const answer = await api.alarms(filters);
    setAlarms(answer.alarms);
    setCounts(answer.counts);
  }, [api, filters]);
  usePolling(load, REFRESH_MS);

  const act = async (alarm: Alarm, action: string, extra: Record<string, unknown> = {}) => {
    try {
      await api.alarmAction(action, { event_id: alarm.event_id, gateway: alarm.gateway, ...extra });
      setMessage({ kind: 'info', text: `${action.replaceAll('_', ' ')} ${alarm.alarm_id}: done` });
      await load();
    } catch (err) {
      const stale = err instanceof ApiError && err.code === 'stale';
      setMessage({ kind: 'error', text: `${stale ? 'Refused as stale' : 'Refused'}: ${errorText(err)}` });
    }
  };
  const shelve = (alarm: Alarm) => {
    const choice = SHELVE_FOR[shelveFor][1];
    void act(alarm, 'shelve', choice === 'one_shot' ? { one_shot: true } : { duration_s: choice });
  };

  return (
    <PageFrame title="Alarms" testId="alarms-page" onClose={onClose} message={message} onDismiss={() => setMessage(null)}>
      <form className="assign" onSubmit={(e) => e.preventDefault()}>
        <label>
          State{' '}
          <select value={filters.state} onChange={(e) => setFilters({ ...filters, state: e.target.value })} data-testid="alarm-state-filter">
            <option value="">all</option>
            <option value="ACTIVE,RTN_UNACK">unacknowledged</option>
            {STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Severity{' '}
          <select value={filters.severity} onChange={(e) => setFilters({ ...filters, severity: e.target.value })}>
            <option value="">all</option>
            {['CRITICAL', 'HIGH', 'MEDIUM', 'LOW'].map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Asset <input value={filters.asset} onChange={(e) => setFilters({ ...filters, asset: e.target.value })} placeholder="tank_1" />
        </label>
        {canAct && (
          <label>
            Shelve for{' '}
            <select value={shelveFor} onChange={(e) => setShelveFor(Number(e.target.value))} data-testid="shelve-for">
              {SHELVE_FOR.map(([label], index) => (
                <option key={label} value={index}>
                  {label}
                </option>
              ))}
            </select>
          </label>
        )}
        <span className="hint" data-testid="alarm-counts">
          {counts ? `${counts.unacknowledged} unacknowledged` : ''}
        </span>
      </form>
      <table className="gateways">
        <thead>
          <tr>
            <th>Severity</th>
            <th>State</th>
            <th>Alarm</th>
            <th>Message</th>
            <th>Since</th>
            <th>By</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {alarms.map((a) => (
            <tr key={`${a.gateway}/${a.flow}/${a.node}/${a.alarm_id}`} data-testid={`alarm-${a.alarm_id}`} data-state={a.state}
                data-event={a.event_id}>
              <td className={`severity-${a.severity.toLowerCase()}`}>{a.severity}</td>
              <td>
                <span className={`sf-badge alarm-${a.state.toLowerCase()}`} data-testid="alarm-state">
                  {a.state}
                </span>
                {a.shelved_until && <small> until {when(a.shelved_until)}</small>}
                {a.state !== 'ACTIVE' && a.state !== 'ACKNOWLEDGED' && a.active && <small> (condition active)</small>}
              </td>
              <td>
                {a.asset_id} / {a.parameter}
                <br />
                <small>
                  rule {a.rule_id} · {a.flow}/{a.node}
                </small>
              </td>
              <td>{a.message}</td>
              <td>{when(a.timestamps.device_time)}</td>
              <td>{a.changed_by ?? '—'}</td>
              <td className="actions">
                {canAct && (a.state === 'ACTIVE' || a.state === 'RTN_UNACK') && (
                  <button className="primary" onClick={() => void act(a, 'acknowledge')} data-testid="ack">
                    Acknowledge
                  </button>
                )}
                {canAct && ['ACTIVE', 'ACKNOWLEDGED', 'RTN_UNACK', 'CLEARED'].includes(a.state) && (
                  <button onClick={() => shelve(a)} data-testid="shelve">
                    Shelve
                  </button>
                )}
                {canAct && a.state === 'SHELVED' && (
                  <button onClick={() => void act(a, 'unshelve')} data-testid="unshelve">
                    Unshelve
                  </button>
                )}
                {canAct && a.state !== 'SUPPRESSED' && a.state !== 'OUT_OF_SERVICE' && (
                  <button onClick={() => void act(a, 'suppress')}>Suppress</button>
                )}
                {canAct && a.state === 'SUPPRESSED' && <button onClick={() => void act(a, 'unsuppress')}>Unsuppress</button>}
                {canAct && a.state !== 'OUT_OF_SERVICE' && (
                  <button onClick={() => void act(a, 'remove_from_service')}>Out of service</button>
                )}
                {canAct && a.state === 'OUT_OF_SERVICE' && (
                  <button onClick={() => void act(a, 'return_to_service')}>Return to service</button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {alarms.length === 0 && <p className="hint">No alarm matches: alarm rules in deployed flows raise them.</p>}
    </PageFrame>
  );
}
