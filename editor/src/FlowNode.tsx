/** How a node looks on the canvas: name, type, status badge, status line (lag, circuit), modified mark, problems,
 * and typed ports. */
import { Handle, Position, type NodeProps } from '@xyflow/react';
import { createContext, useContext } from 'react';
import { portTitle, type CanvasNode } from './flowModel';
import type { NodeHealth, NodeRate, NodeType, PortSpec, Problem } from './types';

export interface CanvasInfo {
  types: Map<string, NodeType>;
  health: Map<string, NodeHealth>;
  rates: Map<string, NodeRate>;
  onRestart?: (node: string) => void; // an Operator's: stop and start the running node afresh
  modified: Set<string>;
  problems: Map<string, Problem[]>;
  diff: Map<string, 'added' | 'changed'>;
}

export const CanvasInfoContext = createContext<CanvasInfo>({
  types: new Map(),
  health: new Map(),
  rates: new Map(),
  modified: new Set(),
  problems: new Map(),
  diff: new Map(),
});

/** Node-RED's status line: what flows through the node now. */
function rateText(rate: NodeRate): string {
  const parts = [];
  if (rate.in_per_s !== undefined) parts.push(`${rate.in_per_s.toFixed(1)}/s in`);
  if (rate.out_per_s !== undefined) parts.push(`${rate.out_per_s.toFixed(1)}/s out`);
  return parts.join(' · ');
}

const ICONS: Record<string, string> = {
  sources: '▶',
  processing: '⚙',
  alarms: '⚠',
  sinks: '⛁',
};

/** One port: its name, its record type, and the handle wires attach to (inputs left, outputs right). */
function PortRow({ node, port, side }: { node: string; port: PortSpec; side: 'in' | 'out' }) {
  const handle = (
    <Handle
      type={side === 'in' ? 'target' : 'source'}
      position={side === 'in' ? Position.Left : Position.Right}
      id={port.name}
      className={`port-${port.type}`}
      data-testid={`${side}-${node}-${port.name}`}
    />
  );
  return (
    <div className={`sf-port ${side}`} title={portTitle(port)}>
      {side === 'in' && handle}
      {side === 'in' ? <span>{port.name}</span> : <em>{port.type}</em>}
      {side === 'in' ? <em>{port.type}</em> : <span>{port.name}</span>}
      {side === 'out' && handle}
    </div>
  );
}

export function FlowNode({ id, data, selected }: NodeProps<CanvasNode>) {
  const info = useContext(CanvasInfoContext);
  const type = info.types.get(data.type);
  const health = info.health.get(id);
  const problems = info.problems.get(id) ?? [];
  const classes = ['sf-node', `kind-${type?.kind ?? 'unknown'}`];
  if (selected) classes.push('selected');
  if (problems.length) classes.push('has-problems');
  const diff = info.diff.get(id);
  if (diff) classes.push(`diff-${diff}`);
  return (
    <div className={classes.join(' ')} data-testid={`node-${id}`} data-status={health?.status ?? 'NOT_DEPLOYED'}>
      <div className="sf-node-header">
        <span className="sf-node-icon">{ICONS[type?.category ?? ''] ?? '◆'}</span>
        <span className="sf-node-name">{data.name || id}</span>
        {info.modified.has(id) && (
          <span className="sf-modified" title="changed since the last deploy" data-testid={`modified-${id}`}>
            ●
          </span>
        )}
      </div>
      <div className="sf-node-sub">
        <span>{data.type}</span>
        <span
          className={`sf-badge status-${(health?.status ?? 'none').toLowerCase()}`}
          data-testid={`status-${id}`}
          title={health?.last_error ?? (health ? `restarts: ${health.restarts}` : 'not deployed')}
        >
          {health?.status ?? '—'}
        </span>
      </div>
      {health && (info.rates.get(id) || info.onRestart) && (
        <div className="sf-node-status">
          <span data-testid={`rate-${id}`}>{info.rates.get(id) ? rateText(info.rates.get(id) as NodeRate) : ''}</span>
          {info.onRestart && (
            <button className="sf-restart nodrag" title="restart this node (it resumes where it stopped)"
                    onClick={(e) => { e.stopPropagation(); info.onRestart?.(id); }} data-testid={`restart-${id}`}>
              ↻
            </button>
          )}
        </div>
      )}
      {health && (health.lag != null || health.circuit) && (
        <div className="sf-node-detail" data-testid={`detail-${id}`}>
          {health.lag != null && <span>lag {health.lag.toLocaleString('en')}</span>}
          {health.circuit && health.circuit !== 'closed' && (
            <span className="sf-circuit">circuit {health.circuit.replace('_', '-')}</span>
          )}
        </div>
      )}
      {!type && <div className="sf-problem">unknown node type “{data.type}”</div>}
      <div className="sf-ports">
        <div className="sf-port-column">
          {type?.inputs.map((port) => <PortRow key={port.name} node={id} port={port} side="in" />)}
        </div>
        <div className="sf-port-column out">
          {type?.outputs.map((port) => <PortRow key={port.name} node={id} port={port} side="out" />)}
        </div>
      </div>
      {problems.map((problem, index) => (
        <div key={index} className="sf-problem" data-testid={`problem-${id}`} title={problem.hint}>
          {problem.message}
        </div>
      ))}
    </div>
  );
}
