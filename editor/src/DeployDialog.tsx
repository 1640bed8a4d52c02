/** "Where should this flow run?": asked at the first deploy of a flow assigned nowhere (and by Deploy to… in the
 * flow menu). One approved gateway from the fleet's list, or every approved gateway with some labels. */
import { useEffect, useState } from 'react';
import type { Api } from './api';
import { gatewayCount, labelsText, matching } from './fleet';
import type { DeployTarget, GatewaySummary } from './types';

type LabelRow = { key: string; value: string };

/** The selector the rows spell, or null while a row is half filled or none is filled. */
function selectorOf(rows: LabelRow[]): Record<string, string> | null {
  const filled = rows.filter((r) => r.key.trim() || r.value.trim());
  if (!filled.length || filled.some((r) => !r.key.trim() || !r.value.trim())) return null;
  return Object.fromEntries(filled.map((r) => [r.key.trim(), r.value.trim()]));
}

/** What a label selector covers now, in words. */
function matchesText(selector: Record<string, string> | null, covered: GatewaySummary[]): string {
  if (!selector) return 'Each label as key = value; a gateway needs all of them.';
  if (!covered.length) return 'Matches no approved gateway now: it runs on gateways given these labels later.';
  const names = covered.map((g) => g.name).join(', ');
  return `Matches ${gatewayCount(covered.length)}: ${names}. Gateways given these labels later run it too.`;
}

function GatewayRows(props: { gateways: GatewaySummary[]; picked: string; onPick: (id: string) => void }) {
  return (
    <table className="gateways pick" data-testid="deploy-gateways">
      <thead>
        <tr>
          <th />
          <th>Gateway</th>
          <th>Health</th>
          <th>Labels</th>
        </tr>
      </thead>
      <tbody>
        {props.gateways.map((g) => (
          <tr key={g.id} className={props.picked === g.id ? 'selected' : ''} onClick={() => props.onPick(g.id)}
              data-testid={`deploy-gateway-${g.name}`}>
            <td>
              <input type="radio" name="deploy-gateway" checked={props.picked === g.id} onChange={() => props.onPick(g.id)}
                     aria-label={g.name} data-testid="pick" />
            </td>
            <td>
              <strong>{g.name}</strong>
              <br />
              <small>{g.id}</small>
            </td>
            <td>
              <span className={`sf-badge status-${g.health.toLowerCase()}`}>{g.health}</span>
            </td>
            <td>{labelsText(g.labels) || <span className="hint">—</span>}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function LabelRows(props: { rows: LabelRow[]; onRows: (rows: LabelRow[]) => void }) {
  const { rows, onRows } = props;
  const set = (index: number, patch: Partial<LabelRow>) =>
    onRows(rows.map((r, i) => (i === index ? { ...r, ...patch } : r)));
  return (
    <div className="label-rows">
      {rows.map((row, index) => (
        <div key={index} className="label-row">
          <input value={row.key} onChange={(e) => set(index, { key: e.target.value })} placeholder="site"
                 aria-label="label key" data-testid={`label-key-${index}`} />
          <span>=</span>
          <input value={row.value} onChange={(e) => set(index, { value: e.target.value })} placeholder="north"
                 aria-label="label value" data-testid={`label-value-${index}`} />
          {rows.length > 1 && (
            <button type="button" onClick={() => onRows(rows.filter((_, i) => i !== index))} aria-label="remove label">
              ✕
            </button>
          )}
        </div>
      ))}
      <button type="button" onClick={() => onRows([...rows, { key: '', value: '' }])} data-testid="label-add">
        + label
      </button>
    </div>
  );
}

export function DeployDialog(props: {
  api: Api;
  flowId: string;
  current: string[]; // where it is assigned already (texts); empty for a first deploy
  onCancel: () => void;
  onDeploy: (target: DeployTarget, text: string) => void;
}) {
  const [gateways, setGateways] = useState<GatewaySummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [kind, setKind] = useState<'gateway' | 'labels'>('gateway');
  const [picked, setPicked] = useState('');
  const [rows, setRows] = useState<LabelRow[]>([{ key: '', value: '' }]);
  const { api } = props;

  useEffect(() => {
    api.gateways().then(
      (all) => {
        setGateways(all);
        const approved = all.filter((g) => g.status === 'approved');
        if (approved.length === 1) setPicked(approved[0].id); // the only choice there is
      },
      (err: unknown) => setError(err instanceof Error ? err.message : String(err)),
    );
  }, [api]);

  const approved = (gateways ?? []).filter((g) => g.status === 'approved');
  const waiting = (gateways ?? []).filter((g) => g.status === 'pending').length;
  const selector = selectorOf(rows);
  const covered = selector ? matching(selector, approved) : [];
  const chosen = approved.find((g) => g.id === picked);
  let target: DeployTarget | null = null;
  let text = ''; // the target in words, as the toolbar will show it
  if (kind === 'gateway' && chosen) [target, text] = [{ gateway: chosen.id }, chosen.name];
  if (kind === 'labels' && selector) {
    [target, text] = [{ labels: selector }, `${labelsText(selector)} (${gatewayCount(covered.length)})`];
  }
  const first = props.current.length === 0;

  return (
    <div className="modal" role="dialog" aria-labelledby="deploy-title" data-testid="deploy-dialog">
      <form
        className="deploy-dialog"
        onSubmit={(e) => {
          e.preventDefault();
          if (target) props.onDeploy(target, text);
        }}
      >
        <h3 id="deploy-title">
          {first ? 'Where should' : 'Deploy'} <code>{props.flowId}</code> {first ? 'run?' : 'to another place'}
        </h3>
        <p className="hint">
          {first
            ? 'It is assigned to no gateway yet. Pick a gateway, or every gateway with some labels; later deploys go ' +
              'to the same place.'
            : `It is assigned to ${props.current.join(', ')} already; this adds a target, and every deploy goes to ` +
              'all of them.'}
        </p>
        <div className="choice" role="radiogroup">
          <label>
            <input type="radio" checked={kind === 'gateway'} onChange={() => setKind('gateway')}
                   data-testid="deploy-kind-gateway" />
            One gateway
          </label>
          <label>
            <input type="radio" checked={kind === 'labels'} onChange={() => setKind('labels')}
                   data-testid="deploy-kind-labels" />
            Every gateway with labels
          </label>
        </div>
        {error && <div className="error" role="alert">Listing the gateways: {error}</div>}
        {gateways === null && !error && <p className="hint">Listing the gateways…</p>}
        {gateways !== null && kind === 'gateway' && approved.length === 0 && (
          <p className="error" data-testid="no-gateways">
            No approved gateway yet: start one with <code>streamforge gateway --control-plane URL</code> and approve it on
            the Gateways page.
          </p>
        )}
        {kind === 'gateway' && approved.length > 0 && (
          <GatewayRows gateways={approved} picked={picked} onPick={setPicked} />
        )}
        {kind === 'labels' && (
          <>
            <LabelRows rows={rows} onRows={setRows} />
            <p className={selector && !covered.length ? 'error' : 'hint'} data-testid="label-matches">
              {matchesText(selector, covered)}
            </p>
          </>
        )}
        {waiting > 0 && (
          <p className="hint">
            {gatewayCount(waiting)} waiting for approval on the Gateways page {waiting === 1 ? 'is' : 'are'} not listed.
          </p>
        )}
        <div className="buttons">
          <button type="button" onClick={props.onCancel} data-testid="deploy-cancel">
            Cancel
          </button>
          <button className="primary" type="submit" disabled={!target} data-testid="deploy-confirm" autoFocus>
            {target ? `Deploy to ${text}` : 'Deploy'}
          </button>
        </div>
      </form>
    </div>
  );
}
