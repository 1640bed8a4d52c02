/** Shapes the control plane's REST API and live websocket exchange with the editor. */

export type PortType = 'telemetry' | 'event' | 'alarm' | 'aggregate' | 'dlq' | 'any';

export interface PortSpec {
  name: string;
  type: PortType;
  topic: string | null;
  required: boolean;
  description: string;
}

export type JsonSchema = Record<string, unknown>;

/** One palette entry, as `GET /api/v1/node-types` describes it. */
export interface NodeType {
  type: string;
  kind: 'source' | 'processor' | 'sink';
  category: string;
  icon: string;
  description: string;
  version: string;
  inputs: PortSpec[];
  outputs: PortSpec[];
  config_schema: JsonSchema;
}

export interface NodeSpec {
  id: string;
  type: string;
  name: string;
  x: number;
  y: number;
  config: Record<string, unknown>;
}

export interface EdgeSpec {
  from: string;
  to: string;
}

/** `streamforge.flow/v1`, as stored and exported. */
export interface FlowDocument {
  format: 'streamforge.flow/v1';
  id: string;
  label: string;
  version: number;
  nodes: NodeSpec[];
  edges: EdgeSpec[];
}

export interface Problem {
  code: string;
  message: string;
  pointer?: string;
  node_id?: string;
  port?: string;
  hint?: string;
}

export interface SavedFlow extends FlowDocument {
  saved_at: string;
  saved_by: string;
  problems?: Problem[];
}

export interface FlowSummary {
  id: string;
  label: string;
  version: number;
  deployed_version: number | null;
}

export interface FlowVersion {
  version: number;
  saved_at: string;
  saved_by: string;
}

export interface ValueChange {
  field: string;
  old: unknown;
  new: unknown;
}

export interface FlowDiff {
  from: number;
  to: number;
  label: { old: string; new: string } | null;
  nodes: { added: string[]; removed: string[]; changed: Record<string, ValueChange[]> };
  edges: { added: string[]; removed: string[] };
}

/** What deploying the edited document would restart, by the compiler's fingerprints (POST /flows/{id}/changes). */
export interface FlowChanges {
  deployed_version: number | null;
  modified: string[] | null;
  removed: string[];
  problems: Problem[];
}

export type Role = 'viewer' | 'operator' | 'engineer' | 'admin';

export interface Session {
  token: string;
  username: string;
  role: Role;
}

export type NodeStatus = 'STARTING' | 'RUNNING' | 'DEGRADED' | 'FAILED' | 'STOPPED' | string;

export interface NodeHealth {
  flow: string;
  node: string;
  type: string;
  status: NodeStatus;
  restarts: number;
  last_error: string | null;
  lag?: number; // processors and sinks: records behind their input topics
  circuit?: 'closed' | 'open' | 'half_open'; // sinks
}

export interface GatewayStatus {
  status: string;
  kafka: { status: string };
  flows: Record<string, number>;
  nodes: NodeHealth[];
  rates?: Record<string, NodeRate>;
}

export interface TapRecord {
  flow: string;
  node: string;
  port: string;
  offset: number;
  dropped: number;
  record: Record<string, unknown>;
}

export interface ApplyResult {
  result: 'APPLIED' | 'NOT_APPLIED';
  wanted: Record<string, number>;
  flows: Record<string, number>;
  cause: string | null;
  flow: string | null;
  node: string | null;
  at: number;
}

/** One gateway of the fleet, as `GET /api/v1/gateways` lists it. */
export interface GatewaySummary {
  id: string;
  name: string;
  status: 'pending' | 'approved' | 'rejected';
  health: string;
  labels: Record<string, string>;
  version: string | null;
  last_seen: number | null;
  running: Record<string, number>;
  previous: Record<string, number>;
  desired: Record<string, number>;
  last_apply: ApplyResult | null;
  disk: DiskReport | null;
}

/** A gateway's disk budget as its heartbeat reports it (the overflow manager's tier, when Kafka is embedded). */
export interface DiskReport {
  total: number;
  used: number;
  free: number;
  tier?: string;
  used_fraction?: number | null;
  producers_blocked?: boolean;
  evicted?: Record<string, number>;
}

/** A node's records per second over about the last ten seconds, keyed `flow/node`. */
export interface NodeRate {
  in_per_s?: number;
  out_per_s?: number;
  window_s: number;
}

/** One alarm's latest transition, from the control plane's alarm store. */
export interface Alarm {
  gateway: string;
  flow: string;
  node: string;
  alarm_id: string;
  event_id: string;
  asset_id: string;
  parameter: string;
  rule_id: string;
  severity: 'CRITICAL' | 'HIGH' | 'MEDIUM' | 'LOW';
  state: string;
  active: boolean;
  acknowledged: boolean;
  shelved_until: string | null;
  value: number | null;
  threshold: number | null;
  message: string;
  changed_by: string | null;
  timestamps: { device_time: string | null; gateway_time: string };
}

export interface AlarmCounts {
  unacknowledged: number;
  by_state: Record<string, number>;
}

export interface DlqReason {
  code: string;
  field: string | null;
  message: string;
}

/** A dead letter as the DLQ page shows it: where it came from, why, and the reading it holds. */
export interface DeadLetter {
  id: string;
  gateway: string;
  flow: string;
  node: string;
  source_topic: string;
  source_partition: number | null;
  source_offset: number | null;
  asset_id: string | null;
  reasons: DlqReason[];
  failed_at: string;
  reading: Record<string, unknown> | null;
  payload_error: string | null;
  reprocessed: { job: string; user: string; kind: string } | null;
}

export interface DlqListing {
  records: DeadLetter[];
  total: number;
  waiting: number;
  counts_by_reason: Record<string, number>;
  unreachable: Record<string, string>;
}

export interface DlqJob {
  id: string;
  gateway: string;
  kind: 'approve' | 'revalidate';
  user: string;
  state: 'RUNNING' | 'DONE' | 'FAILED';
  total: number;
  done: number;
  reprocessed: number;
  already: number;
  still_failing: number;
  refused: Record<string, number>;
  error: string | null;
}

export interface LogLine {
  timestamp: string;
  level: string;
  component: string;
  gateway_id?: string;
  gateway?: string;
  message: string;
  flow?: string;
  node?: string;
  error?: string;
  [field: string]: unknown;
}

export interface HealthComponent {
  component: string;
  status: string;
  type?: string;
  node_status?: string;
  restarts?: number;
  last_error?: string | null;
  lag?: number | null;
  detail?: string;
  in_per_s?: number;
  out_per_s?: number;
}

export interface HealthReport {
  status: string;
  gateways: { gateway: string; name: string; status: string; last_seen: number | null; components: HealthComponent[] }[];
  alarms: AlarmCounts;
}
