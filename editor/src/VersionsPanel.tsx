/** Saved versions of the flow: pick two to see what changed (also coloured on the canvas), restore any. */
import { useEffect, useState } from 'react';
import { ApiError, type Api } from './api';
import type { FlowDiff, FlowVersion, SavedFlow } from './types';

/** A value as the diff shows it: JSON, "(none)" where the field was absent. */
const shown = (value: unknown): string => (value === null || value === undefined ? '(none)' : JSON.stringify(value));

export function VersionsPanel(props: {
  api: Api;
  flowId: string;
  version: number;
  deployedVersion: number | null;
  canEdit: boolean;
  onRestored: (flow: SavedFlow) => void;
  onDiff: (diff: FlowDiff | null) => void;
}) {
  const { api, flowId, version, onDiff } = props;
  const [versions, setVersions] = useState<FlowVersion[]>([]);
  const [picked, setPicked] = useState<number[]>([]);
  const [diff, setDiff] = useState<FlowDiff | null>(null);
  const [error, setError] = useState('');

  useEffect(() => {
    api.versions(flowId).then(setVersions, (e: Error) => setError(e.message));
  }, [api, flowId, version]);

  useEffect(() => {
    if (picked.length !== 2) {
      setDiff(null);
      onDiff(null);
      return;
    }
    const [a, b] = [...picked].sort((x, y) => x - y);
    api.diff(flowId, a, b).then(
      (d) => {
        setDiff(d);
        onDiff(d);
      },
      (e: Error) => setError(e.message),
    );
  }, [api, flowId, picked, onDiff]);

  const toggle = (v: number) => setPicked((p) => (p.includes(v) ? p.filter((x) => x !== v) : [...p.slice(-1), v]));
  const restore = async (v: number) => {
    try {
      props.onRestored(await api.restore(flowId, v));
      setPicked([]);
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    }
  };

  return (
    <div className="versions" data-testid="versions-panel">
      <p className="hint">Tick two versions to compare them.</p>
      <ul>
        {[...versions].reverse().map((v) => (
          <li key={v.version} data-testid={`version-${v.version}`}>
            <label>
              <input type="checkbox" checked={picked.includes(v.version)} onChange={() => toggle(v.version)} />
              <strong>v{v.version}</strong>
              {v.version === version && <em> current</em>}
              {v.version === props.deployedVersion && <em> deployed</em>}
            </label>
            <small>
              {new Date(v.saved_at).toLocaleString()} · {v.saved_by}
            </small>
            {props.canEdit && v.version !== version && (
              <button onClick={() => void restore(v.version)} data-testid={`restore-${v.version}`}>
                Restore
              </button>
            )}
          </li>
        ))}
      </ul>
      {diff && (
        <div className="diff" data-testid="diff">
          <h4>
            v{diff.from} → v{diff.to}
          </h4>
          {diff.label && (
            <div className="diff-changed" data-testid="diff-label">
              ~ label: {shown(diff.label.old)} → {shown(diff.label.new)}
            </div>
          )}
          {diff.nodes.added.map((n) => (
            <div key={`a${n}`} className="diff-added">+ node {n}</div>
          ))}
          {diff.nodes.removed.map((n) => (
            <div key={`r${n}`} className="diff-removed">− node {n}</div>
          ))}
          {Object.entries(diff.nodes.changed).map(([n, changes]) => (
            <div key={`c${n}`} className="diff-changed" data-testid={`diff-node-${n}`}>
              ~ node {n}
              <ul>
                {changes.map((c) => (
                  <li key={c.field}>
                    <code>{c.field}</code>: {shown(c.old)} → {shown(c.new)}
                  </li>
                ))}
              </ul>
            </div>
          ))}
          {diff.edges.added.map((e) => (
            <div key={`ea${e}`} className="diff-added">+ wire {e}</div>
          ))}
          {diff.edges.removed.map((e) => (
            <div key={`er${e}`} className="diff-removed">− wire {e}</div>
          ))}
          {!diff.label &&
            !diff.nodes.added.length &&
            !diff.nodes.removed.length &&
            !Object.keys(diff.nodes.changed).length &&
            !diff.edges.added.length &&
            !diff.edges.removed.length && <div>No changes (moves are not changes).</div>}
        </div>
      )}
      {error && <p className="error">{error}</p>}
    </div>
  );
}
