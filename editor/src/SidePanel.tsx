/** The side panel's tabs: the selected node's name and config form, the flow's versions, and its problems (each
 * one a link to the node or wire it is about). */
import type { Api } from './api';
import { ConfigForm } from './ConfigForm';
import type { CanvasNode } from './flowModel';
import type { FlowDiff, NodeType, Problem, SavedFlow } from './types';
import { VersionsPanel } from './VersionsPanel';

export type Panel = 'node' | 'versions' | 'problems';

export function SidePanel(props: {
  api: Api;
  panel: Panel;
  onPanel: (panel: Panel) => void;
  base: SavedFlow | null;
  deployedVersion: number | null;
  canEdit: boolean;
  label: string;
  onLabel: (label: string) => void;
  selected: CanvasNode[];
  nodeType: NodeType | undefined;
  onNodeChange: (id: string, patch: Partial<CanvasNode['data']>) => void;
  problems: Problem[];
  onProblem: (problem: Problem) => void;
  onDiff: (diff: FlowDiff | null) => void;
  onRestored: (flow: SavedFlow) => void;
}) {
  const { base, canEdit, selected, problems } = props;
  const one = selected.length === 1 ? selected[0] : null;
  return (
    <aside className="side">
      <nav className="tabs">
        {(['node', 'versions', 'problems'] as Panel[]).map((p) => (
          <button key={p} className={props.panel === p ? 'active' : ''} onClick={() => props.onPanel(p)} data-testid={`tab-${p}`}>
            {p === 'problems' ? `problems (${problems.length})` : p}
          </button>
        ))}
      </nav>
      {props.panel === 'node' && base && (
        <div className="node-panel">
          <label>
            Flow label
            <input value={props.label} readOnly={!canEdit} onChange={(e) => props.onLabel(e.target.value)} data-testid="flow-label" />
          </label>
          {!one && <p className="hint">Select one node to configure it. {selected.length > 1 && `${selected.length} selected.`}</p>}
          {one && (
            <div data-testid="node-config">
              <h3>
                {one.id} <small>{one.data.type}</small>
              </h3>
              <p className="hint">{props.nodeType?.description}</p>
              <label>
                Name
                <input
                  value={one.data.name}
                  readOnly={!canEdit}
                  data-testid="node-name"
                  onChange={(e) => props.onNodeChange(one.id, { name: e.target.value })}
                />
              </label>
              {props.nodeType && (
                <ConfigForm
                  key={one.id}
                  nodeId={one.id}
                  schema={props.nodeType.config_schema}
                  config={one.data.config}
                  readonly={!canEdit}
                  onChange={(config) => props.onNodeChange(one.id, { config })}
                />
              )}
            </div>
          )}
        </div>
      )}
      {props.panel === 'versions' && base && (
        <VersionsPanel
          api={props.api}
          flowId={base.id}
          version={base.version}
          deployedVersion={props.deployedVersion}
          canEdit={canEdit}
          onDiff={props.onDiff}
          onRestored={props.onRestored}
        />
      )}
      {props.panel === 'problems' && (
        <ul className="problems" data-testid="problems">
          {problems.length === 0 && <li className="hint">No problems: the flow compiles.</li>}
          {problems.map((p, i) => (
            <li key={i}>
              <button className="link" onClick={() => props.onProblem(p)} data-testid={`problem-${i}`}
                      title="show it on the canvas">
                <code>{p.pointer ?? '/'}</code>
                {p.node_id && <strong> {p.node_id}</strong>} {p.message}
                {p.hint && <em> — {p.hint}</em>}
              </button>
            </li>
          ))}
        </ul>
      )}
    </aside>
  );
}
