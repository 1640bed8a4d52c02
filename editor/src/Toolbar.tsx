/** The toolbar: which flow, new/import/export, undo/redo, save and deploy (with what it would restart and where it
 * goes), the flow menu, which gateway the live view is on and its health, and who is signed in. */
import { FlowMenu, type FlowMenuItem } from './FlowMenu';
import type { FlowOnGateway, FlowSummary, GatewayStatus, Session } from './types';

/** The pages besides the canvas and the fleet that the toolbar opens. */
export type Page = 'alarms' | 'dlq' | 'logs' | 'health' | 'audit' | 'account' | 'users';

/** The gateway the live view shows: one of those running the flow (or none running it yet). */
function GatewayPicker(props: {
  running: Record<string, FlowOnGateway>;
  value: string | null;
  onChange: (id: string) => void;
}) {
  const ids = Object.keys(props.running).sort();
  if (!ids.length) return null;
  return (
    <label className="picker" title="the gateway whose status, rates, modified marks and taps the canvas shows">
      <select value={props.value ?? ''} onChange={(e) => props.onChange(e.target.value)} data-testid="gateway-pick">
        {ids.map((id) => (
          <option key={id} value={id}>
            {props.running[id].name} · v{props.running[id].version}
          </option>
        ))}
      </select>
    </label>
  );
}

/** The badge of the live view's gateway: its health, "not running" while no gateway runs the flow (a quiet fact,
 * with the server's words as its title), "offline" while the live socket is down. */
function LiveBadge(props: { gateway: GatewayStatus | null; connected: boolean; onClick: () => void }) {
  const { gateway, connected } = props;
  const none = connected && gateway !== null && gateway.gateway === null;
  const text = !connected ? 'offline' : none ? 'not running' : (gateway?.status ?? '…');
  const kind = !connected ? 'offline' : none ? 'none' : (gateway?.status ?? 'none').toLowerCase();
  const title = none
    ? (gateway?.message ?? 'no gateway runs this flow yet')
    : `${gateway?.name ?? 'the gateway'}: ${text}; open the health roll-up`;
  return (
    <button className={`sf-badge status-${kind}`} data-testid="gateway-status" data-gateway={gateway?.gateway ?? ''}
            onClick={props.onClick} title={title}>
      {text}
    </button>
  );
}

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
  targets: string | null; // where Deploy goes, in words; "" when nowhere yet, null before it is known
  running: Record<string, FlowOnGateway>;
  viewGateway: string | null;
  onViewGateway: (id: string) => void;
  menu: FlowMenuItem[];
  onPick: (id: string) => void;
  onNew: () => void;
  onImport: () => void;
  onExport: () => void;
  onUndo: () => void;
  onRedo: () => void;
  onSave: () => void;
  onDeploy: () => void;
  onGateways: () => void;
  onPage: (page: Page) => void;
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
      {props.flowId && props.targets !== null && (
        <span className={`targets ${props.targets ? '' : 'nowhere'}`} data-testid="deploy-targets"
              title={props.targets ? `Deploy sends this flow to ${props.targets}` : 'Deploy asks where the first time'}>
          → {props.targets || 'no gateway yet'}
        </span>
      )}
      {canEdit && props.flowId && <FlowMenu items={props.menu} />}
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
      {canEdit && (
        <button onClick={() => props.onPage('audit')} data-testid="open-audit" title="who changed what">
          Audit
        </button>
      )}
      <button onClick={props.onGateways} data-testid="open-gateways">
        Gateways
      </button>
      <GatewayPicker running={props.running} value={props.viewGateway} onChange={props.onViewGateway} />
      <LiveBadge gateway={gateway} connected={props.connected} onClick={() => props.onPage('health')} />
      {props.session.role === 'admin' && (
        <button onClick={() => props.onPage('users')} data-testid="open-users" title="users and their tokens">
          Users
        </button>
      )}
      <button className="user" onClick={() => props.onPage('account')} data-testid="open-account"
              title="your password and tokens">
        {props.session.username} ({props.session.role})
      </button>
      <button onClick={props.onSignOut}>Sign out</button>
    </header>
  );
}
