/** One flow at a time: palette, canvas, side panel, toolbar and debug panel, over the hooks that hold the state. */
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
  type Connection,
  type EdgeChange,
  type NodeChange,
} from '@xyflow/react';
import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent } from 'react';
import { Api, ApiError, problemTarget } from './api';
import { requiredDefaults } from './ConfigForm';
import { DebugPanel } from './DebugPanel';
import { DeployDialog } from './DeployDialog';
import { ConfirmDialog, DiscardDialog, ImportDialog, NewFlowDialog } from './Dialogs';
import { assignmentTarget, gatewayCount, stoppedOn, targetText, useFleetView } from './fleet';
import type { FlowMenuItem } from './FlowMenu';
import { CanvasInfoContext, FlowNode, type CanvasInfo } from './FlowNode';
import { duplicate, newNodeId, stable, toCanvas, toDocument, wireRefusal, type Canvas, type CanvasNode } from './flowModel';
import { AccountPage, UsersPage } from './AccountPages';
import { AlarmsPage } from './AlarmsPage';
import { DlqPage } from './DlqPage';
import { GatewaysPage } from './GatewaysPage';
import { HealthPage } from './HealthPage';
import { AuditPage } from './AuditPage';
import { LogsPage } from './LogsPage';
import { NoticeBar, type GatewayLine, type Notice } from './NoticeBar';
import { usePolling } from './PageFrame';
import { DRAG_MIME, Palette } from './Palette';
import { SidePanel, type Panel } from './SidePanel';
import { Toolbar, type Page } from './Toolbar';
import type {
  DeployResult,
  DeployTarget,
  FlowDiff,
  FlowDocument,
  FlowSummary,
  GatewaySummary,
  NodeType,
  Problem,
  SavedFlow,
  Session,
} from './types';
import { useChanges } from './useChanges';
import { snapshot, useHistory } from './useHistory';
import { useLive } from './useLive';
import { useShortcuts } from './useShortcuts';

const NODE_TYPES = { sf: FlowNode };

const sameContent = (doc: FlowDocument, base: FlowDocument): boolean => {
  const strip = (d: FlowDocument) => stable({ label: d.label, nodes: d.nodes, edges: d.edges });
  return strip(doc) === strip(base);
};

function download(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  const link = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.appendChild(link);
  link.click();
  link.remove();
  URL.revokeObjectURL(url);
}

const ALARM_COUNT_MS = 2000;

/** The notice after a deploy: the version, where it went, and each gateway's answer. */
function deployNotice(result: DeployResult, gateways: GatewaySummary[]): Notice {
  const lines: GatewayLine[] = Object.entries(result.gateways)
    .map(([id, r]) => ({ id, name: gateways.find((g) => g.id === id)?.name ?? id, result: r.result, cause: r.cause }))
    .sort((a, b) => a.name.localeCompare(b.name));
  const where = result.targets.map((t) => targetText(t, gateways)).sort().join(', ');
  const failed = lines.filter((l) => l.result === 'NOT_APPLIED').length;
  const pending = lines.filter((l) => l.result === 'PENDING').length;
  let text = `Deployed v${result.version} to ${where}`;
  if (!lines.length) text += ': no approved gateway matches yet; it runs where one does';
  else if (failed) text += `: rolled back on ${failed} of ${gatewayCount(lines.length)}`;
  else if (pending) text += `: ${pending} of ${gatewayCount(lines.length)} not applied yet`;
  return { kind: failed ? 'error' : pending ? 'warning' : 'info', text, gateways: lines };
}

export function Editor(props: { session: Session; onSignOut: () => void; onExpired: () => void }) {
  const { session, onSignOut, onExpired } = props;
  const api = useMemo(() => new Api(session.token, onExpired), [session.token, onExpired]);
  const canEdit = session.role === 'engineer' || session.role === 'admin';
  const canOperate = session.role !== 'viewer';
  const flowView = useReactFlow();
  const view = useRef(flowView); // the instance changes identity as the canvas mounts; loads must not re-run
  view.current = flowView;

  const [types, setTypes] = useState<NodeType[]>([]);
  const typeMap = useMemo(() => new Map(types.map((t) => [t.type, t])), [types]);
  const [flows, setFlows] = useState<FlowSummary[]>([]);
  const [base, setBase] = useState<SavedFlow | null>(null);
  const [label, setLabel] = useState('');
  const [canvas, setCanvasState] = useState<Canvas>({ nodes: [], edges: [] });
  const canvasRef = useRef(canvas);
  const setCanvas = useCallback((update: (c: Canvas) => Canvas) => {
    setCanvasState((c) => (canvasRef.current = update(c)));
  }, []);
  const { record, undo, redo, reset: resetHistory, size: historySize } = useHistory(canvasRef, setCanvas);
  const clipboard = useRef<Canvas | null>(null);

  const [problems, setProblems] = useState<Problem[]>([]);
  const [notice, setNotice] = useState<Notice>(null);
  const [panel, setPanel] = useState<Panel>('node');
  const [diff, setDiff] = useState<FlowDiff | null>(null);
  const [modal, setModal] = useState<'import' | 'new' | 'deploy-to' | 'undeploy' | 'delete' | null>(null);
  const [page, setPage] = useState<'flows' | 'gateways' | Page>('flows');
  const [unacknowledged, setUnacknowledged] = useState<number | null>(null);
  const [pending, setPending] = useState<(() => void) | null>(null); // waits for "discard unsaved changes?"
  const live = useLive(session.token, onExpired, setNotice);
  const fleet = useFleetView(api, base?.id ?? null);
  const [picked, setPicked] = useState<string | null>(null); // the gateway the user chose for the live view
  usePolling(async () => {
    try {
      setUnacknowledged((await api.alarms({ state: 'ACTIVE,RTN_UNACK' })).counts.unacknowledged);
    } catch {
      setUnacknowledged(null); // the toolbar shows no count rather than a stale one
    }
  }, ALARM_COUNT_MS);

  const fail = useCallback((err: unknown, what: string) => {
    if (err instanceof ApiError) {
      setNotice({ kind: 'error', text: `${what}: ${err.message}`, code: err.code, problems: err.problems });
    } else setNotice({ kind: 'error', text: `${what}: ${String(err)}` });
  }, []);

  const current = useMemo(() => (base ? { ...toDocument(base, canvas), label } : null), [base, canvas, label]);
  const dirty = base !== null && current !== null && !sameContent(current, base);

  // The live view is on one gateway running the flow: the one picked while it runs it, else the first.
  const running = useMemo(() => fleet.status?.gateways ?? {}, [fleet.status]);
  const viewGateway = picked !== null && running[picked] ? picked : (Object.keys(running).sort()[0] ?? null);
  const flowId = base?.id ?? null;
  const { subscribe, stopTaps } = live;
  useEffect(() => subscribe(flowId, viewGateway), [subscribe, flowId, viewGateway]);
  const viewed = useRef(viewGateway);
  useEffect(() => {
    // Taps were of the gateway left (none shown yet, or none any more: the taps end by themselves).
    if (viewed.current !== null && viewGateway !== null && viewed.current !== viewGateway) stopTaps();
    viewed.current = viewGateway;
  }, [viewGateway, stopTaps]);
  // What the modified marks compare against: the version on the live view's gateway, else the one last deployed.
  const runningVersion = viewGateway
    ? (running[viewGateway]?.version ?? null)
    : (flows.find((f) => f.id === flowId)?.deployed_version ?? null);
  const changes = useChanges(api, current, viewGateway, runningVersion);
  /** Run `action` now, or once the user agreed to drop the unsaved edits it would replace. */
  const guard = useCallback((action: () => void) => (dirty ? setPending(() => action) : action()), [dirty]);

  // ---- loading -------------------------------------------------------------------------------------------
  const loading = useRef(0);
  const loadFlow = useCallback(
    async (id: string) => {
      const ticket = ++loading.current; // a slower, older load must not overwrite a newer one
      const [summaries, flow] = await Promise.all([api.flows(), api.flow(id)]);
      if (ticket !== loading.current) return;
      stopTaps(); // the taps were of the flow on screen
      setFlows(summaries);
      setBase(flow);
      setLabel(flow.label);
      setCanvas(() => toCanvas(flow));
      resetHistory();
      setProblems(flow.problems ?? []);
      setDiff(null);
      location.hash = `#/flows/${id}`;
      requestAnimationFrame(() => {
        if (flow.nodes.length) void view.current.fitView({ padding: 0.15, maxZoom: 1 });
        else void view.current.setViewport({ x: 0, y: 0, zoom: 1 });
      });
    },
    [api, setCanvas, resetHistory, stopTaps],
  );
  const open = useCallback(
    (id: string) => guard(() => void loadFlow(id).catch((e: unknown) => fail(e, 'Loading the flow'))),
    [guard, loadFlow, fail],
  );

  useEffect(() => {
    api.nodeTypes().then(setTypes, (e: unknown) => fail(e, 'Loading node types'));
    api.flows().then((summaries) => {
      setFlows(summaries);
      const wanted = /^#\/flows\/(.+)$/.exec(location.hash)?.[1];
      const id = summaries.find((f) => f.id === wanted)?.id ?? summaries[0]?.id;
      // A flow the user opened or created meanwhile (a slow first answer) is not replaced by the first one.
      if (id && loading.current === 0) void loadFlow(id).catch((e: unknown) => fail(e, 'Loading the flow'));
    }, (e: unknown) => fail(e, 'Loading flows'));
  }, [api, loadFlow, fail]);

  // ---- editing ---------------------------------------------------------------------------------------------
  /** Whether canvas changes may apply: a removal needs the right to edit, and is an undo step. */
  const mayApply = useCallback(
    (changed: { type: string }[]) => {
      if (!changed.some((c) => c.type === 'remove')) return true;
      if (canEdit) record();
      return canEdit;
    },
    [canEdit, record],
  );
  const onNodesChange = useCallback(
    (changed: NodeChange<CanvasNode>[]) => {
      if (mayApply(changed)) setCanvas((c) => ({ ...c, nodes: applyNodeChanges(changed, c.nodes) }));
    },
    [mayApply, setCanvas],
  );
  const onEdgesChange = useCallback(
    (changed: EdgeChange[]) => {
      if (mayApply(changed)) setCanvas((c) => ({ ...c, edges: applyEdgeChanges(changed, c.edges) }));
    },
    [mayApply, setCanvas],
  );
  const onConnect = useCallback(
    (wire: Connection) => {
      const refusal = wireRefusal(typeMap, canvasRef.current.nodes, canvasRef.current.edges, wire);
      if (refusal) {
        setNotice({ kind: 'error', text: `Wire refused: ${refusal}` });
        return;
      }
      record();
      const id = `${wire.source}:${wire.sourceHandle}->${wire.target}:${wire.targetHandle}`;
      setCanvas((c) => ({ ...c, edges: [...c.edges, { ...wire, id }] }));
      setNotice(null);
    },
    [typeMap, record, setCanvas],
  );
  const addNode = useCallback(
    (type: string, position?: { x: number; y: number }) => {
      const nodeType = typeMap.get(type);
      if (!canEdit || !nodeType) return;
      record();
      const at = position ?? flowView.screenToFlowPosition({ x: window.innerWidth / 2, y: window.innerHeight / 2 });
      // Starts with what its form shows for the required fields, so what is seen is what is saved.
      const config = requiredDefaults(nodeType.config_schema);
      setCanvas((c) => {
        const id = newNodeId(type, new Set(c.nodes.map((n) => n.id)));
        const node: CanvasNode = { id, type: 'sf', position: at, selected: true, data: { type, name: '', config } };
        return { ...c, nodes: [...c.nodes.map((n) => ({ ...n, selected: false })), node] };
      });
      setPanel('node');
    },
    [canEdit, typeMap, record, flowView, setCanvas],
  );
  const updateNode = useCallback(
    (id: string, patch: Partial<CanvasNode['data']>) => {
      record(`node ${id}`);
      setCanvas((c) => ({ ...c, nodes: c.nodes.map((n) => (n.id === id ? { ...n, data: { ...n.data, ...patch } } : n)) }));
    },
    [record, setCanvas],
  );
  const onDrop = useCallback(
    (event: DragEvent) => {
      event.preventDefault();
      const type = event.dataTransfer.getData(DRAG_MIME);
      if (type) addNode(type, flowView.screenToFlowPosition({ x: event.clientX, y: event.clientY }));
    },
    [addNode, flowView],
  );
  const copy = useCallback(() => {
    const nodes = canvasRef.current.nodes.filter((n) => n.selected);
    const ids = new Set(nodes.map((n) => n.id));
    clipboard.current = snapshot({
      nodes,
      edges: canvasRef.current.edges.filter((e) => ids.has(e.source) && ids.has(e.target)),
    });
  }, []);
  const paste = useCallback(() => {
    if (!clipboard.current?.nodes.length || !canEdit) return;
    record();
    const clip = clipboard.current;
    setCanvas((c) => {
      const pasted = duplicate(clip, new Set(c.nodes.map((n) => n.id)), 40);
      return {
        nodes: [...c.nodes.map((n) => ({ ...n, selected: false })), ...pasted.nodes],
        edges: [...c.edges, ...pasted.edges],
      };
    });
  }, [canEdit, record, setCanvas]);
  const selectAll = useCallback(
    () => setCanvas((c) => ({ ...c, nodes: c.nodes.map((n) => ({ ...n, selected: true })) })),
    [setCanvas],
  );

  /** A problem clicked in the list: its node (or the two ends of its wire) selected and brought into view. */
  const showProblem = useCallback(
    (problem: Problem) => {
      if (!current) return;
      const target = problemTarget(problem, current);
      const edge = target.edge !== undefined ? canvasRef.current.edges[target.edge] : undefined;
      const ids = new Set(target.node ? [target.node] : edge ? [edge.source, edge.target] : []);
      if (!ids.size) return;
      setCanvas((c) => ({
        nodes: c.nodes.map((n) => ({ ...n, selected: ids.has(n.id) })),
        edges: c.edges.map((e) => ({ ...e, selected: e === edge })),
      }));
      if (target.node) setPanel('node');
      void flowView.fitView({ nodes: [...ids].map((id) => ({ id })), padding: 0.6, maxZoom: 1.2, duration: 200 });
    },
    [current, setCanvas, flowView],
  );

  // ---- saving and deploying -------------------------------------------------------------------------------
  const save = useCallback(async (): Promise<SavedFlow | null> => {
    if (!base) return null;
    try {
      const saved = await api.save({ ...toDocument(base, canvasRef.current), label });
      setBase(saved);
      setProblems(saved.problems ?? []);
      setFlows(await api.flows());
      setNotice({
        kind: saved.problems?.length ? 'error' : 'info',
        text: saved.problems?.length
          ? `Saved v${saved.version}, but it will not deploy: ${saved.problems.length} problem(s) marked on the canvas`
          : `Saved v${saved.version}`,
      });
      return saved;
    } catch (err) {
      fail(err, 'Save refused');
      return null;
    }
  }, [api, base, label, fail]);

  /** Save if need be, then deploy wherever the flow is assigned plus `target`; a flow assigned nowhere asks where
   * first (the dialog calls back with a target). */
  const { status: flowStatus, gateways: fleetGateways, refresh: refreshFleet } = fleet;
  const deploy = useCallback(
    async (target?: DeployTarget, where?: string) => {
      if (!base) return;
      const saved = dirty ? await save() : base;
      if (!saved) return;
      if (saved.problems?.length) {
        setProblems(saved.problems);
        setPanel('problems');
        setNotice({ kind: 'error', text: `Deploy refused: ${saved.problems.length} problem(s); fix the marked nodes and wires` });
        return;
      }
      if (!target && flowStatus?.targets.length === 0) {
        setModal('deploy-to');
        return;
      }
      try {
        setNotice({ kind: 'info', text: `Deploying ${saved.id} v${saved.version}${where ? ` to ${where}` : ''}…` });
        const result = await api.deploy(saved.id, 'modified', target);
        setFlows(await api.flows());
        setProblems([]);
        setNotice(deployNotice(result, fleetGateways));
        void refreshFleet();
      } catch (err) {
        if (err instanceof ApiError && err.code === 'no_target') {
          setNotice(null);
          setModal('deploy-to'); // assigned nowhere after all (someone undeployed it meanwhile)
          return;
        }
        if (err instanceof ApiError && err.problems.length) setProblems(err.problems);
        fail(err, 'Deploy refused');
        void refreshFleet();
      }
    },
    [api, base, dirty, save, fail, flowStatus, fleetGateways, refreshFleet],
  );

  /** After the flow on screen is gone: the first flow left, or an empty editor when none is. */
  const showFirstFlow = useCallback(
    async (summaries: FlowSummary[]) => {
      setFlows(summaries);
      if (summaries.length) return loadFlow(summaries[0].id);
      loading.current++;
      setBase(null);
      setLabel('');
      setCanvas(() => ({ nodes: [], edges: [] }));
      resetHistory();
      setProblems([]);
      setDiff(null);
      history.replaceState(null, '', location.pathname + location.search);
    },
    [loadFlow, setCanvas, resetHistory],
  );

  const undeploy = useCallback(async () => {
    if (!base) return;
    setModal(null);
    try {
      const { stopped_on } = await api.undeploy(base.id);
      stopTaps();
      const names = stopped_on.map((id) => fleetGateways.find((g) => g.id === id)?.name ?? id);
      setFlows(await api.flows());
      setNotice({
        kind: 'info',
        text: names.length
          ? `Undeployed ${base.id}: stopping on ${names.join(', ')}; it is saved, and Deploy asks where to run it`
          : `Undeployed ${base.id}: it was assigned nowhere any more`,
      });
    } catch (err) {
      fail(err, 'Undeploy refused');
    }
    void refreshFleet();
  }, [api, base, stopTaps, fleetGateways, fail, refreshFleet]);

  const deleteFlow = useCallback(async () => {
    if (!base) return;
    setModal(null);
    try {
      await api.deleteFlow(base.id);
      stopTaps();
      await showFirstFlow(await api.flows());
      setNotice({ kind: 'info', text: `Deleted flow ${base.id}` });
    } catch (err) {
      fail(err, 'Delete refused');
    }
  }, [api, base, stopTaps, showFirstFlow, fail]);

  const exportFlow = useCallback(async () => {
    if (!base) return;
    const saved = dirty ? await save() : base;
    if (!saved) return;
    try {
      download(`${saved.id}.json`, await api.exportFlow(saved.id));
    } catch (err) {
      fail(err, 'Export');
    }
  }, [api, base, dirty, save, fail]);

  useShortcuts({ canEdit, undo, redo, copy, paste, save, selectAll,
                 fit: () => void flowView.fitView({ padding: 0.15, maxZoom: 1 }) }); // prettier-ignore

  // ---- what the canvas shows -------------------------------------------------------------------------------
  const { gateway } = live;
  const info: CanvasInfo = useMemo(() => {
    const health = new Map((gateway?.nodes ?? []).filter((n) => n.flow === base?.id).map((n) => [n.node, n]));
    const byNode = new Map<string, Problem[]>();
    for (const p of problems) {
      const where = current ? problemTarget(p, current).node : undefined;
      if (where) byNode.set(where, [...(byNode.get(where) ?? []), p]);
    }
    const diffMarks = new Map<string, 'added' | 'changed'>();
    diff?.nodes.added.forEach((n) => diffMarks.set(n, 'added'));
    Object.keys(diff?.nodes.changed ?? {}).forEach((n) => diffMarks.set(n, 'changed'));
    const prefix = `${base?.id ?? ''}/`;
    const rates = new Map(
      Object.entries(gateway?.rates ?? {})
        .filter(([key]) => key.startsWith(prefix))
        .map(([key, rate]) => [key.slice(prefix.length), rate]),
    );
    const onRestart =
      canOperate && base
        ? (node: string) =>
            void api
              .restart(base.id, node, viewGateway)
              .then((done) => setNotice({ kind: 'info', text: `Restarted ${node}: now ${done.now}` }))
              .catch((err: unknown) => fail(err, `Restart ${node}`))
        : undefined;
    return { types: typeMap, health, rates, onRestart, modified: changes.modified, problems: byNode, diff: diffMarks };
  }, [gateway, base, problems, current, diff, typeMap, changes.modified, canOperate, api, fail, viewGateway]);

  const edges = useMemo(() => {
    const bad = new Map<number, Problem>();
    for (const p of problems) {
      const edge = current ? problemTarget(p, current).edge : undefined;
      if (edge !== undefined) bad.set(edge, p);
    }
    return canvas.edges.map((e, index) => {
      const p = bad.get(index);
      return p ? { ...e, className: 'edge-problem', label: p.message, animated: true } : e;
    });
  }, [canvas.edges, problems, current]);

  const selected = canvas.nodes.filter((n) => n.selected);
  const one = selected.length === 1 ? selected[0] : null;
  const oneType = one ? typeMap.get(one.data.type) : undefined;
  // Taps are offered only on what runs: a node the live view's gateway reports for this flow.
  const runs = one !== null && info.health.has(one.id);
  const tapPorts = one && oneType && runs ? oneType.outputs.map((p) => ({ node: one.id, port: p.name })) : [];

  const targets = flowStatus
    ? flowStatus.targets.map((a) => targetText(assignmentTarget(a), fleetGateways)).sort()
    : null;
  const stopping = stoppedOn(flowStatus, fleetGateways);
  const stoppingText = stopping.length
    ? `It stops on ${gatewayCount(stopping.length)}: ${stopping.map((g) => g.name).join(', ')}.`
    : 'No gateway runs it now.';
  const menu: FlowMenuItem[] = [
    { id: 'deploy-to', label: 'Deploy to…', title: 'deploy to another gateway or label selector as well',
      disabled: !canEdit, onClick: () => setModal('deploy-to') },
    { id: 'undeploy', label: 'Undeploy', title: 'stop this flow on every gateway; it stays saved',
      disabled: !canEdit || (stopping.length === 0 && !targets?.length), onClick: () => setModal('undeploy') },
    { id: 'delete', label: 'Delete flow', title: 'stop it everywhere and remove it from the flow list', danger: true,
      disabled: !canEdit, onClick: () => setModal('delete') },
  ]; // prettier-ignore

  const back = () => {
    setPage('flows');
    api.flows().then(setFlows, () => undefined); // flows made or removed meanwhile (an agent, another tab)
  };
  if (page === 'gateways') return <GatewaysPage api={api} session={session} onClose={back} />;
  if (page === 'alarms') return <AlarmsPage api={api} session={session} onClose={back} />;
  if (page === 'dlq') return <DlqPage api={api} session={session} onClose={back} />;
  if (page === 'logs') return <LogsPage api={api} onClose={back} />;
  if (page === 'audit') return <AuditPage api={api} onClose={back} />;
  if (page === 'health') return <HealthPage api={api} session={session} onClose={back} />;
  if (page === 'account') return <AccountPage api={api} session={session} onClose={back} onSignOut={onSignOut} />;
  if (page === 'users') return <UsersPage api={api} session={session} onClose={back} />;
  return (
    <CanvasInfoContext.Provider value={info}>
      <div className="app">
        <Toolbar
          session={session}
          canEdit={canEdit}
          flows={flows}
          flowId={base?.id ?? null}
          dirty={dirty}
          restarts={changes.modified.size + changes.removed.length}
          canUndo={historySize.past > 0}
          canRedo={historySize.future > 0}
          gateway={gateway}
          connected={live.connected}
          targets={targets === null ? null : targets.join(', ')}
          running={running}
          viewGateway={viewGateway}
          onViewGateway={setPicked}
          menu={menu}
          onPick={open}
          onNew={() => guard(() => setModal('new'))}
          onImport={() => guard(() => setModal('import'))}
          onExport={() => void exportFlow()}
          onUndo={undo}
          onRedo={redo}
          onSave={() => void save()}
          onDeploy={() => void deploy()}
          onGateways={() => guard(() => setPage('gateways'))}
          onPage={(to) => guard(() => setPage(to))}
          unacknowledged={unacknowledged}
          onSignOut={onSignOut}
        />
        <NoticeBar
          notice={notice}
          onReload={base ? () => void loadFlow(base.id) : null}
          onDismiss={() => setNotice(null)}
        />
        <div className="body">
          {canEdit && <Palette types={types} onAdd={(t) => addNode(t)} />}
          <main className="canvas" onDragOver={(e) => e.preventDefault()} onDrop={onDrop} data-testid="canvas">
            <ReactFlow
              nodes={canvas.nodes}
              edges={edges}
              nodeTypes={NODE_TYPES}
              onNodesChange={onNodesChange}
              onEdgesChange={onEdgesChange}
              onConnect={onConnect}
              onNodeDragStart={() => record()}
              nodesDraggable={canEdit}
              nodesConnectable={canEdit}
              deleteKeyCode={canEdit ? ['Delete', 'Backspace'] : null}
              multiSelectionKeyCode={['Shift', 'Control', 'Meta']}
            >
              <Background />
              <Controls />
              <MiniMap pannable zoomable />
            </ReactFlow>
          </main>
          <SidePanel
            api={api}
            panel={panel}
            onPanel={setPanel}
            base={base}
            deployedVersion={flows.find((f) => f.id === base?.id)?.deployed_version ?? null}
            canEdit={canEdit}
            label={label}
            onLabel={setLabel}
            selected={selected}
            nodeType={oneType}
            onNodeChange={updateNode}
            problems={problems}
            onProblem={showProblem}
            onDiff={setDiff}
            onRestored={(flow) => {
              void loadFlow(flow.id);
              setNotice({ kind: 'info', text: `Restored as v${flow.version}; deploy to run it` });
            }}
          />
        </div>
        <DebugPanel
          records={live.records}
          taps={live.taps}
          ports={tapPorts}
          onTap={(node, port) => base && live.tap(base.id, node, port, viewGateway)}
          onStop={live.stopTaps}
          onClear={live.clearRecords}
        />
        {modal === 'new' && (
          <NewFlowDialog
            onCancel={() => setModal(null)}
            onCreate={async (id, flowLabel) => {
              try {
                const created = await api.create({ format: 'streamforge.flow/v1', id, label: flowLabel, version: 0, nodes: [], edges: [] });
                setModal(null);
                await loadFlow(created.id);
              } catch (err) {
                fail(err, 'Create refused');
              }
            }}
          />
        )}
        {modal === 'import' && (
          <ImportDialog
            onCancel={() => setModal(null)}
            onImport={async (text) => {
              const imported = await api.importFlow(text);
              setModal(null);
              await loadFlow(imported.id);
              setNotice({ kind: 'info', text: `Imported ${imported.id} as v${imported.version}` });
            }}
          />
        )}
        {modal === 'deploy-to' && base && (
          <DeployDialog
            api={api}
            flowId={base.id}
            current={targets ?? []}
            onCancel={() => setModal(null)}
            onDeploy={(target, where) => {
              setModal(null);
              void deploy(target, where);
            }}
          />
        )}
        {modal === 'undeploy' && base && (
          <ConfirmDialog title={`Undeploy ${base.id}?`} confirm="Undeploy" testId="undeploy-dialog"
                         onConfirm={() => void undeploy()} onCancel={() => setModal(null)}>
            <p data-testid="confirm-text">{stoppingText}</p>
            <p className="hint">
              {targets?.length ? `Its assignment to ${targets.join(', ')} is removed. ` : ''}The flow stays saved with all its
              versions; the next Deploy asks where to run it.
            </p>
          </ConfirmDialog>
        )}
        {modal === 'delete' && base && (
          <ConfirmDialog title={`Delete flow ${base.id}?`} confirm="Delete flow" testId="delete-dialog"
                         onConfirm={() => void deleteFlow()} onCancel={() => setModal(null)}>
            <p data-testid="confirm-text">{stoppingText}</p>
            <p className="hint">It leaves the flow list{dirty ? ', and your unsaved edits are lost' : ''}.</p>
          </ConfirmDialog>
        )}
        {pending && base && (
          <DiscardDialog
            flowId={base.id}
            onKeep={() => setPending(null)}
            onDiscard={() => {
              const action = pending;
              setPending(null);
              action();
            }}
          />
        )}
      </div>
    </CanvasInfoContext.Provider>
  );
}
