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
      <button onClick={props.onGateways} data-testid="open-gateways">
        Gateways
      </button>
      <span className={`sf-badge status-${(gateway?.status ?? 'none').toLowerCase()}`} data-testid="gateway-status">
        gateway {props.connected ? (gateway?.status ?? '…') : 'offline'}
      </span>
      <span className="user">
        {props.session.username} ({props.session.role})
      </span>
      <button onClick={props.onSignOut}>Sign out</button>
    </header>
  );
}
