/** The toolbar: which flow, new/import/export, undo/redo, save and deploy (with what it would restart), the
 * gateway's health and who is signed in. */
import type { FlowSummary, GatewayStatus, Session } from './types';

export function Toolbar(props: {
  session: Session;
  canEdit: boolean;
  flows: FlowSummary[];
  flowId: string | null;
  dirty: boolean;
  restarts: number;
  canUndo: boolean;
  canRedo: boolean;
  gateway: GatewayStatus | null;
  connected: boolean;
  onPick: (id: string) => void;
  onNew: () => void;
  onImport: () => void;
  onExport: () => void;
  onUndo: () => void;
  onRedo: () => void;
  onSave: () => void;
  onDeploy: () => void;
  onGateways: () => void;
  onPage: (page: 'alarms' | 'dlq' | 'logs' | 'health') => void;
  unacknowledged: number | null;
  onSignOut: () => void;
}) {
  const { canEdit, gateway } = props;
  return (
    <header className="toolbar">
      <strong className="brand">StreamForge</strong>
      <select value={props.flowId ?? ''} onChange={(e) => props.onPick(e.target.value)} data-testid="flow-select">
        {props.flows.map((f) => (
          <option key={f.id} value={f.id}>
            {f.id}
          </option>
        ))}
      </select>
      {canEdit && <button onClick={props.onNew}>New</button>}
      {canEdit && <button onClick={props.onImport}>Import</button>}
      <button onClick={props.onExport} disabled={!props.flowId} data-testid="export">
        Export
      </button>
      <span className="sep" />
      <button onClick={props.onUndo} disabled={!canEdit || !props.canUndo} title="Ctrl+Z" data-testid="undo">
        Undo
      </button>
      <button onClick={props.onRedo} disabled={!canEdit || !props.canRedo} title="Ctrl+Shift+Z" data-testid="redo">
        Redo
      </button>
      <span className="sep" />
      <button onClick={props.onSave} disabled={!canEdit || !props.dirty} title="Ctrl+S" data-testid="save">
        Save{props.dirty ? ' *' : ''}
      </button>
      <button className="primary" onClick={props.onDeploy} disabled={!canEdit || !props.flowId} data-testid="deploy"
              title="restarts only the nodes marked modified">
        Deploy{props.restarts ? ` (${props.restarts} modified)` : ''}
      </button>
      <span className="grow" />
      <button onClick={() => props.onPage('alarms')} data-testid="open-alarms" title="alarms waiting for an operator">
        Alarms{' '}
        <span className={`sf-count ${props.unacknowledged ? 'alarming' : ''}`} data-testid="alarm-count">
          {props.unacknowledged ?? '…'}
        </span>
      </button>
      <button onClick={() => props.onPage('dlq')} data-testid="open-dlq">
        DLQ
      </button>
      <button onClick={() => props.onPage('logs')} data-testid="open-logs">
        Logs
      </button>
      <button onClick={() => props.onPage('health')} data-testid="open-health">
        Health
      </button>
      <button onClick={props.onGateways} data-testid="open-gateways">
        Gateways
      </button>
      <button className={`sf-badge status-${(gateway?.status ?? 'none').toLowerCase()}`} data-testid="gateway-status"
              onClick={() => props.onPage('health')} title="open the health roll-up">
        gateway {props.connected ? (gateway?.status ?? '…') : 'offline'}
      </button>
      <span className="user">
        {props.session.username} ({props.session.role})
      </span>
      <button onClick={props.onSignOut}>Sign out</button>
    </header>
  );
}
