/** Records sampled from tapped output ports (at most 20/s each, sent by the control plane), newest first; the taps
 * listed are those the server confirmed. */
import type { TapRecord } from './types';

const summary = (r: Record<string, unknown>): string => {
  const parts = ['asset_id', 'parameter', 'value', 'unit', 'quality', 'state', 'resolution', 'reason']
    .filter((k) => r[k] !== undefined && r[k] !== null)
    .map((k) => `${k}=${typeof r[k] === 'object' ? JSON.stringify(r[k]) : String(r[k])}`);
  return parts.length ? parts.join('  ') : JSON.stringify(r);
};

export function DebugPanel(props: {
  records: TapRecord[];
  taps: string[];
  ports: { node: string; port: string }[];
  onTap: (node: string, port: string) => void;
  onStop: () => void;
  onClear: () => void;
}) {
  return (
    <div className="debug" data-testid="debug-panel">
      <div className="debug-bar">
        <strong>Debug</strong>
        {props.ports.map(({ node, port }) => (
          <button key={`${node}:${port}`} onClick={() => props.onTap(node, port)} data-testid={`tap-${node}-${port}`}>
            Tap {node}:{port}
          </button>
        ))}
        {props.ports.length === 0 && <span className="hint">Select a deployed node to tap its outputs.</span>}
        <span className="hint" data-testid="taps">{props.taps.length ? `tapping ${props.taps.join(', ')}` : ''}</span>
        <button onClick={props.onStop} disabled={!props.taps.length} data-testid="stop-taps">
          Stop taps
        </button>
        <button onClick={props.onClear} data-testid="clear-records">
          Clear
        </button>
      </div>
      <ol data-testid="debug-records">
        {props.records.map((r, index) => (
          <li key={`${r.node}:${r.port}:${r.offset}:${index}`} title={JSON.stringify(r.record, null, 2)}>
            <code>
              {r.node}:{r.port} @{r.offset}
            </code>{' '}
            {summary(r.record)}
            {r.dropped > 0 && <em> ({r.dropped} not shown)</em>}
          </li>
        ))}
      </ol>
    </div>
  );
}
