/** Where a flow goes, in words: its assignment targets, the approved gateways a label selector covers, and the
 * flow status and gateway list the editor keeps polling for them. */
import { useCallback, useEffect, useRef, useState } from 'react';
import type { Api } from './api';
import type { Assignment, DeployTarget, FlowStatus, GatewaySummary } from './types';

const POLL_MS = 2000;

export const labelsText = (labels: Record<string, string>): string =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');

/** The approved gateways a selector covers: each of its labels, with the same value. */
export const matching = (labels: Record<string, string>, gateways: GatewaySummary[]): GatewaySummary[] =>
  gateways.filter((g) => g.status === 'approved' && Object.entries(labels).every(([k, v]) => g.labels[k] === v));

const plural = (n: number, one: string): string => `${n} ${one}${n === 1 ? '' : 's'}`;

/** "local", or "site=north (2 gateways)". */
export function targetText(target: DeployTarget, gateways: GatewaySummary[]): string {
  if ('gateway' in target) return gateways.find((g) => g.id === target.gateway)?.name ?? target.gateway;
  return `${labelsText(target.labels)} (${plural(matching(target.labels, gateways).length, 'gateway')})`;
}

export const assignmentTarget = (a: Assignment): DeployTarget =>
  a.target_kind === 'gateway' ? { gateway: a.target } : { labels: a.labels ?? {} };

/** The gateways a flow would stop on if unassigned: those its targets cover, and those running it now. */
export function stoppedOn(status: FlowStatus | null, gateways: GatewaySummary[]): { id: string; name: string }[] {
  const ids = new Set(Object.keys(status?.gateways ?? {}));
  for (const a of status?.targets ?? []) {
    const target = assignmentTarget(a);
    if ('gateway' in target) ids.add(target.gateway);
    else matching(target.labels, gateways).forEach((g) => ids.add(g.id));
  }
  return [...ids].sort().map((id) => ({
    id,
    name: gateways.find((g) => g.id === id)?.name ?? status?.gateways[id]?.name ?? id,
  }));
}

export const gatewayCount = (n: number): string => plural(n, 'gateway');

/** The flow's status (who runs it, where it is assigned) and the fleet's gateways, polled while the flow is on
 * screen; `refresh` asks again at once (after a deploy, an undeploy). */
export function useFleetView(api: Api, flowId: string | null) {
  const [status, setStatus] = useState<FlowStatus | null>(null);
  const [gateways, setGateways] = useState<GatewaySummary[]>([]);
  const flow = useRef(flowId);
  flow.current = flowId;

  const refresh = useCallback(async () => {
    const asked = flow.current;
    const [flowStatus, fleet] = await Promise.all([
      asked ? api.flowStatus(asked).catch(() => null) : Promise.resolve(null),
      api.gateways().catch(() => null),
    ]);
    if (asked !== flow.current) return; // the user moved to another flow meanwhile
    setStatus(flowStatus);
    if (fleet) setGateways(fleet);
  }, [api]);

  useEffect(() => {
    let stopped = false;
    let timer = 0;
    const tick = async () => {
      try {
        await refresh();
      } finally {
        if (!stopped) timer = window.setTimeout(() => void tick(), POLL_MS);
      }
    };
    void tick();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [refresh, flowId]);

  return { status: status?.flow === flowId ? status : null, gateways, refresh };
}
