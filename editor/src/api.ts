/** The REST client: bearer token on every call, and the API's one error shape turned into ApiError. */
import type {
  Alarm,
  AlarmCounts,
  AuditRow,
  DeployResult,
  DeployTarget,
  DlqJob,
  DlqListing,
  FlowChanges,
  FlowDiff,
  FlowDocument,
  FlowStatus,
  FlowSummary,
  FlowVersion,
  GatewaySummary,
  HealthReport,
  LogLine,
  NodeType,
  Problem,
  SavedFlow,
  Session,
  TokenInfo,
  UndeployResult,
  UserInfo,
} from './types';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly problems: Problem[] = [],
  ) {
    super(message);
  }
}

export class Api {
  constructor(
    readonly token: string,
    private readonly onUnauthorized: () => void,
  ) {}

  private async call<T>(method: string, path: string, body?: unknown, raw = false): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    let payload: string | undefined;
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = typeof body === 'string' ? body : JSON.stringify(body);
    }
    const response = await fetch(`/api/v1${path}`, { method, headers, body: payload });
    if (response.status === 401) this.onUnauthorized();
    if (!response.ok) throw await errorOf(response);
    if (response.status === 204) return undefined as T;
    return (raw ? await response.text() : await response.json()) as T;
  }

  nodeTypes = () => this.call<NodeType[]>('GET', '/node-types');
  flows = () => this.call<FlowSummary[]>('GET', '/flows');
  flow = (id: string, version?: number) =>
    this.call<SavedFlow>('GET', `/flows/${id}${version === undefined ? '' : `?version=${version}`}`);
  create = (doc: FlowDocument) => this.call<SavedFlow>('POST', '/flows', doc);
  save = (doc: FlowDocument) => this.call<SavedFlow>('PUT', `/flows/${doc.id}`, doc);
  versions = (id: string) => this.call<FlowVersion[]>('GET', `/flows/${id}/versions`);
  diff = (id: string, from: number, to: number) => this.call<FlowDiff>('GET', `/flows/${id}/diff?from=${from}&to=${to}`);
  restore = (id: string, version: number) => this.call<SavedFlow>('POST', `/flows/${id}/versions/${version}/restore`);
  importFlow = (text: string) => this.call<SavedFlow>('POST', '/flows/import', text);
  exportFlow = (id: string) => this.call<string>('GET', `/flows/${id}/export`, undefined, true);
  /** What deploying `doc` would restart on `gateway` (else against the version last deployed). */
  changes = (id: string, doc: FlowDocument, gateway?: string | null) =>
    this.call<FlowChanges>('POST', `/flows/${id}/changes${query({ gateway: gateway ?? '' })}`, doc);
  /** The latest version, wherever the flow is assigned plus `target` (409 `no_target` when that is nowhere). */
  deploy = (id: string, mode: 'modified' | 'full', target?: DeployTarget) =>
    this.call<DeployResult>('POST', `/flows/${id}/deploy`, { mode, ...target });
  /** Every assignment goes: the flow stops on every gateway and stays saved. */
  undeploy = (id: string) => this.call<UndeployResult>('POST', `/flows/${id}/undeploy`);
  /** Unassigned everywhere, then hidden from the flow list. */
  deleteFlow = (id: string) => this.call<void>('DELETE', `/flows/${id}`);
  flowStatus = (id: string, gateway?: string | null) =>
    this.call<FlowStatus>('GET', `/flows/${id}/status${query({ gateway: gateway ?? '' })}`);
  gateways = () => this.call<GatewaySummary[]>('GET', '/gateways');
  decide = (id: string, decision: 'approve' | 'reject') => this.call<GatewaySummary>('POST', `/gateways/${id}/${decision}`);
  assign = (flow: string, version: number, target: { gateway: string } | { labels: Record<string, string> }) =>
    this.call<{ gateways: string[] }>('POST', '/assignments', { flow, version, ...target });
  /** The gateway `id` (a new identity) takes the place of `replaces`: name, labels, assignments; the old one retires. */
  replaceGateway = (id: string, replaces: string) =>
    this.call<GatewaySummary>('POST', `/gateways/${id}/replace`, { replaces });
  deleteGateway = (id: string) => this.call<void>('DELETE', `/gateways/${id}`);
  rejectPending = (ids: string[] | 'all') =>
    this.call<{ rejected: string[] }>('POST', '/gateways/reject', ids === 'all' ? { all_pending: true } : { gateways: ids });
  rollback = (id: string) => this.call<{ rolled_back: Record<string, number> }>('POST', `/gateways/${id}/rollback`);
  alarms = (filters: Record<string, string>) =>
    this.call<{ alarms: Alarm[]; counts: AlarmCounts }>('GET', `/alarms${query(filters)}`);
  alarmAction = (action: string, body: Record<string, unknown>) => this.call<unknown>('POST', `/alarms/${action}`, body);
  dlq = (filters: Record<string, string>) => this.call<DlqListing>('GET', `/dlq${query(filters)}`);
  approveDlq = (gateway: string, ids: string[]) => this.call<DlqJob>('POST', '/dlq/approve', { gateway, ids });
  revalidate = (flow: string, node: string) => this.call<DlqJob>('POST', '/dlq/revalidate', { flow, node });
  dlqJob = (gateway: string, id: string) => this.call<DlqJob>('GET', `/dlq/jobs/${id}${query({ gateway })}`);
  audit = (filters: Record<string, string>) => this.call<AuditRow[]>('GET', `/audit${query(filters)}`);
  logs = (filters: Record<string, string>) => this.call<{ lines: LogLine[] }>('GET', `/logs${query(filters)}`);
  health = () => this.call<HealthReport>('GET', '/health');
  restart = (flow: string, node: string, gateway?: string | null) =>
    this.call<{ now: string; gateway: string }>('POST', `/flows/${flow}/nodes/${node}/restart`, gateway ? { gateway } : {});
  /** The caller's live tokens and sessions; an Admin's list has everyone's. */
  tokens = () => this.call<TokenInfo[]>('GET', '/tokens');
  /** A named token: the answer's `token` is shown once, never again. */
  createToken = (name: string, scope: 'api' | 'mcp', days: number) =>
    this.call<TokenInfo & { token: string }>('POST', '/tokens', { name, scope, days });
  revokeToken = (id: string) => this.call<void>('DELETE', `/tokens/${id}`);
  changePassword = (current_password: string, new_password: string) =>
    this.call<{ revoked_tokens: number }>('POST', '/users/me/password', { current_password, new_password });
  users = () => this.call<UserInfo[]>('GET', '/users');
  createUser = (username: string, password: string, role: string) =>
    this.call<UserInfo>('POST', '/users', { username, password, role });
  updateUser = (username: string, change: { role?: string; disabled?: boolean }) =>
    this.call<UserInfo>('PATCH', `/users/${encodeURIComponent(username)}`, change);
  deleteUser = (username: string) => this.call<void>('DELETE', `/users/${encodeURIComponent(username)}`);
}

/** `?a=1&b=2` of the filters that are set (empty ones are left out). */
function query(filters: Record<string, string>): string {
  const set = Object.entries(filters).filter(([, v]) => v !== '');
  return set.length ? `?${new URLSearchParams(set).toString()}` : '';
}

async function errorOf(response: Response): Promise<ApiError> {
  try {
    const body = (await response.json()) as { error?: { code: string; message: string; problems?: Problem[] } };
    if (body.error) return new ApiError(response.status, body.error.code, body.error.message, body.error.problems);
  } catch {
    // not our JSON error shape: fall through to the status line
  }
  return new ApiError(response.status, 'http_error', `${response.status} ${response.statusText}`);
}

/** A session from the server's answer, stamped with when it ends on this clock. */
async function sessionOf(response: Response): Promise<Session> {
  if (!response.ok) throw await errorOf(response);
  const session = (await response.json()) as Session;
  return { ...session, expires_at: Date.now() + session.expires_in * 1000 };
}

export async function login(username: string, password: string): Promise<Session> {
  const response = await fetch('/api/v1/auth/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  return sessionOf(response);
}

/** A fresh session in place of `token` (which stops working): called before the session ends. */
export async function refreshSession(token: string): Promise<Session> {
  return sessionOf(await fetch('/api/v1/auth/refresh', { method: 'POST', headers: { Authorization: `Bearer ${token}` } }));
}

/** Revoke the session on the server (best effort: the editor forgets it either way). */
export async function logout(token: string): Promise<void> {
  await fetch('/api/v1/auth/logout', { method: 'POST', headers: { Authorization: `Bearer ${token}` } }).catch(() => undefined);
}

/** Where a problem is: its node (by id or by /nodes/N pointer) or its edge (/edges/N). */
export function problemTarget(problem: Problem, doc: FlowDocument): { node?: string; edge?: number } {
  if (problem.node_id && !problem.pointer?.startsWith('/edges/')) return { node: problem.node_id };
  const match = /^\/(nodes|edges)\/(\d+)/.exec(problem.pointer ?? '');
  if (!match) return problem.node_id ? { node: problem.node_id } : {};
  const index = Number(match[2]);
  return match[1] === 'nodes' ? { node: doc.nodes[index]?.id } : { edge: index };
}
