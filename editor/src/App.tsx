/** The editor: sign-in, palette, canvas, side panels and toolbar around one flow at a time. */
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
  type Connection,
  type EdgeChange,
  type NodeChange,
} from '@xyflow/react';
import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent } from 'react';
import { Api, ApiError, problemTarget } from './api';
import { ConfigForm } from './ConfigForm';
import { DebugPanel } from './DebugPanel';
import { CanvasInfoContext, FlowNode, type CanvasInfo } from './FlowNode';
import {
  duplicate,
  modifiedNodes,
  newNodeId,
  stable,
  toCanvas,
  toDocument,
  wireRefusal,
  type Canvas,
  type CanvasNode,
} from './flowModel';
import { LiveSocket } from './live';
import { Login } from './Login';
import { DRAG_MIME, Palette } from './Palette';
import type {
  FlowDiff,
  FlowDocument,
  FlowSummary,
  GatewayStatus,
  NodeType,
  Problem,
  SavedFlow,
  Session,
  TapRecord,
} from './types';
import { GatewaysPage } from './GatewaysPage';
import { VersionsPanel } from './VersionsPanel';

const SESSION_KEY = 'streamforge.session';
const NODE_TYPES = { sf: FlowNode };
const MAX_HISTORY = 100;
const MAX_RECORDS = 200;
const CONFIG_COALESCE_MS = 1500; // typing in one form is one undo step, not one per keystroke

type Notice = { kind: 'info' | 'error'; text: string; problems?: Problem[] } | null;
type Panel = 'node' | 'versions' | 'problems';

export function App() {
  const [session, setSession] = useState<Session | null>(() => {
    const saved = sessionStorage.getItem(SESSION_KEY);
    return saved ? (JSON.parse(saved) as Session) : null;
  });
  const signIn = useCallback((s: Session | null) => {
    if (s) sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
    else sessionStorage.removeItem(SESSION_KEY);
    setSession(s);
  }, []);
  const signOut = useCallback(() => signIn(null), [signIn]);
  if (!session) return <Login onSession={signIn} />;
  return (
    <ReactFlowProvider>
      <Editor session={session} onSignOut={signOut} />
    </ReactFlowProvider>
  );
}

const snapshot = (c: Canvas): Canvas => ({
  nodes: c.nodes.map(({ selected: _s, dragging: _d, ...n }) => n),
  edges: c.edges.map(({ selected: _s, ...e }) => e),
});

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

function Editor({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const api = useMemo(() => new Api(session.token, onSignOut), [session.token, onSignOut]);
  const canEdit = session.role === 'engineer' || session.role === 'admin';
  const flowView = useReactFlow();
  const view = useRef(flowView); // the instance changes identity as the canvas mounts; loads must not re-run
  view.current = flowView;

  const [types, setTypes] = useState<NodeType[]>([]);
  const typeMap = useMemo(() => new Map(types.map((t) => [t.type, t])), [types]);
  const [flows, setFlows] = useState<FlowSummary[]>([]);
  const [base, setBase] = useState<SavedFlow | null>(null);
  const [deployed, setDeployed] = useState<FlowDocument | null>(null);
  const [label, setLabel] = useState('');
  const [canvas, setCanvasState] = useState<Canvas>({ nodes: [], edges: [] });
  const canvasRef = useRef(canvas);
  const setCanvas = useCallback((update: (c: Canvas) => Canvas) => {
    setCanvasState((c) => (canvasRef.current = update(c)));
  }, []);
  const past = useRef<Canvas[]>([]);
  const future = useRef<Canvas[]>([]);
  const [historySize, setHistorySize] = useState({ past: 0, future: 0 });
  const lastConfigEdit = useRef({ node: '', at: 0 });
  const clipboard = useRef<Canvas | null>(null);

  const [problems, setProblems] = useState<Problem[]>([]);
  const [notice, setNotice] = useState<Notice>(null);
  const [panel, setPanel] = useState<Panel>('node');
  const [diff, setDiff] = useState<FlowDiff | null>(null);
  const [modal, setModal] = useState<'import' | 'new' | null>(null);
  const [gateway, setGateway] = useState<GatewayStatus | null>(null);
  const [connected, setConnected] = useState(false);
  const [records, setRecords] = useState<TapRecord[]>([]);
  const [taps, setTaps] = useState<string[]>([]);
  const [page, setPage] = useState<'flows' | 'gateways'>('flows');
  const live = useRef<LiveSocket | null>(null);

  const fail = useCallback((err: unknown, what: string) => {
    if (err instanceof ApiError) setNotice({ kind: 'error', text: `${what}: ${err.message}`, problems: err.problems });
    else setNotice({ kind: 'error', text: `${what}: ${String(err)}` });
  }, []);

  // ---- loading -------------------------------------------------------------------------------------------
  const loading = useRef(0);
  const loadFlow = useCallback(
    async (id: string) => {
      const ticket = ++loading.current; // a slower, older load must not overwrite a newer one
      const [summaries, flow] = await Promise.all([api.flows(), api.flow(id)]);
      const deployedVersion = summaries.find((f) => f.id === id)?.deployed_version ?? null;
      const deployedFlow = deployedVersion === null ? null : await api.flow(id, deployedVersion);
      if (ticket !== loading.current) return;
      setFlows(summaries);
      setDeployed(deployedFlow);
      setBase(flow);
      setLabel(flow.label);
      setCanvas(() => toCanvas(flow));
      past.current = [];
      future.current = [];
      setHistorySize({ past: 0, future: 0 });
      setProblems(flow.problems ?? []);
      setDiff(null);
      location.hash = `#/flows/${id}`;
      requestAnimationFrame(() => {
        if (flow.nodes.length) void view.current.fitView({ padding: 0.15, maxZoom: 1 });
        else void view.current.setViewport({ x: 0, y: 0, zoom: 1 });
      });
    },
    [api, setCanvas],
  );

  useEffect(() => {
    api.nodeTypes().then(setTypes, (e: unknown) => fail(e, 'Loading node types'));
    api.flows().then((summaries) => {
      setFlows(summaries);
      const wanted = /^#\/flows\/(.+)$/.exec(location.hash)?.[1];
      const id = summaries.find((f) => f.id === wanted)?.id ?? summaries[0]?.id;
      if (id) void loadFlow(id).catch((e: unknown) => fail(e, 'Loading the flow'));
    }, (e: unknown) => fail(e, 'Loading flows'));
  }, [api, loadFlow, fail]);

  useEffect(() => {
    const socket = new LiveSocket(session.token, {
      status: setGateway,
      record: (r) => setRecords((rs) => [r, ...rs].slice(0, MAX_RECORDS)),
      notice: (text) => setNotice({ kind: 'info', text }),
      connected: setConnected,
      unauthorized: onSignOut,
    });
    live.current = socket;
    return () => socket.close();
  }, [session.token, onSignOut]);

  // ---- history ---------------------------------------------------------------------------------------------
  const record = useCallback(() => {
    past.current = [...past.current, snapshot(canvasRef.current)].slice(-MAX_HISTORY);
    future.current = [];
    setHistorySize({ past: past.current.length, future: 0 });
  }, []);
  const travel = useCallback(
    (from: React.MutableRefObject<Canvas[]>, to: React.MutableRefObject<Canvas[]>) => {
      const target = from.current.at(-1);
      if (!target) return;
      from.current = from.current.slice(0, -1);
      to.current = [...to.current, snapshot(canvasRef.current)];
      setCanvas(() => target);
      setHistorySize({ past: past.current.length, future: future.current.length });
      lastConfigEdit.current = { node: '', at: 0 };
    },
    [setCanvas],
  );
  const undo = useCallback(() => travel(past, future), [travel]);
  const redo = useCallback(() => travel(future, past), [travel]);

  // ---- editing ---------------------------------------------------------------------------------------------
  const onNodesChange = useCallback(
    (changes: NodeChange<CanvasNode>[]) => {
      if (!canEdit && changes.some((c) => c.type === 'remove')) return;
      if (changes.some((c) => c.type === 'remove')) record();
      setCanvas((c) => ({ ...c, nodes: applyNodeChanges(changes, c.nodes) }));
    },
    [canEdit, record, setCanvas],
  );
  const onEdgesChange = useCallback(
    (changes: EdgeChange[]) => {
      if (!canEdit && changes.some((c) => c.type === 'remove')) return;
      if (changes.some((c) => c.type === 'remove')) record();
      setCanvas((c) => ({ ...c, edges: applyEdgeChanges(changes, c.edges) }));
    },
    [canEdit, record, setCanvas],
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
      if (!canEdit) return;
      record();
      const at = position ?? flowView.screenToFlowPosition({ x: window.innerWidth / 2, y: window.innerHeight / 2 });
      setCanvas((c) => {
        const id = newNodeId(type, new Set(c.nodes.map((n) => n.id)));
        const node: CanvasNode = { id, type: 'sf', position: at, selected: true, data: { type, name: '', config: {} } };
        return { ...c, nodes: [...c.nodes.map((n) => ({ ...n, selected: false })), node] };
      });
      setPanel('node');
    },
    [canEdit, record, flowView, setCanvas],
  );
  const updateNode = useCallback(
    (id: string, patch: Partial<CanvasNode['data']>) => {
      const now = Date.now();
      if (lastConfigEdit.current.node !== id || now - lastConfigEdit.current.at > CONFIG_COALESCE_MS) record();
      lastConfigEdit.current = { node: id, at: now };
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

  // ---- saving and deploying -------------------------------------------------------------------------------
  const current = useMemo(() => (base ? { ...toDocument(base, canvas), label } : null), [base, canvas, label]);
  const dirty = base !== null && current !== null && !sameContent(current, base);

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

  const deploy = useCallback(async () => {
    if (!base) return;
    const saved = dirty ? await save() : base;
    if (!saved) return;
    if (saved.problems?.length) {
      setProblems(saved.problems);
      setPanel('problems');
      setNotice({ kind: 'error', text: `Deploy refused: ${saved.problems.length} problem(s); fix the marked nodes and wires` });
      return;
    }
    try {
      const result = await api.deploy(saved.id, 'modified');
      setDeployed(saved);
      setFlows(await api.flows());
      setProblems([]);
      setNotice({ kind: 'info', text: `Deployed v${result.version}` });
    } catch (err) {
      if (err instanceof ApiError && err.problems.length) setProblems(err.problems);
      fail(err, 'Deploy refused');
    }
  }, [api, base, dirty, save, fail]);

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

  // ---- keyboard ----------------------------------------------------------------------------------------------
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const target = event.target as HTMLElement;
      if (target.closest('input, textarea, select, [contenteditable="true"]')) return;
      const mod = event.ctrlKey || event.metaKey;
      const key = event.key.toLowerCase();
      const actions: Record<string, () => void> = {
        z: event.shiftKey ? redo : undo,
        y: redo,
        c: copy,
        v: paste,
        s: () => void save(),
        a: () => setCanvas((c) => ({ ...c, nodes: c.nodes.map((n) => ({ ...n, selected: true })) })),
      };
      if (mod && actions[key]) {
        event.preventDefault();
        if (canEdit || key === 'c' || key === 'a') actions[key]();
      } else if (!mod && key === 'f') {
        void flowView.fitView({ padding: 0.15, maxZoom: 1 });
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [undo, redo, copy, paste, save, canEdit, flowView, setCanvas]);

  // ---- what the canvas shows -------------------------------------------------------------------------------
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
    return { types: typeMap, health, modified: modifiedNodes(canvas, deployed), problems: byNode, diff: diffMarks };
  }, [gateway, base?.id, problems, current, diff, typeMap, canvas, deployed]);

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
  const flowDeployed = base !== null && gateway?.flows[base.id] !== undefined;
  const tapPorts =
    one && oneType && flowDeployed ? oneType.outputs.map((p) => ({ node: one.id, port: p.name })) : [];
  const modifiedCount = info.modified.size;

  if (page === 'gateways') return <GatewaysPage api={api} session={session} onClose={() => setPage('flows')} />;
  return (
    <CanvasInfoContext.Provider value={info}>
      <div className="app">
        <header className="toolbar">
          <strong className="brand">StreamForge</strong>
          <select
            value={base?.id ?? ''}
            onChange={(e) => void loadFlow(e.target.value).catch((err: unknown) => fail(err, 'Loading the flow'))}
            data-testid="flow-select"
          >
            {flows.map((f) => (
              <option key={f.id} value={f.id}>
                {f.id}
              </option>
            ))}
          </select>
          {canEdit && <button onClick={() => setModal('new')}>New</button>}
          {canEdit && <button onClick={() => setModal('import')}>Import</button>}
          <button onClick={() => void exportFlow()} disabled={!base} data-testid="export">
            Export
          </button>
          <span className="sep" />
          <button onClick={undo} disabled={!canEdit || historySize.past === 0} title="Ctrl+Z" data-testid="undo">
            Undo
          </button>
          <button onClick={redo} disabled={!canEdit || historySize.future === 0} title="Ctrl+Shift+Z" data-testid="redo">
            Redo
          </button>
          <span className="sep" />
          <button onClick={() => void save()} disabled={!canEdit || !dirty} title="Ctrl+S" data-testid="save">
            Save{dirty ? ' *' : ''}
          </button>
          <button className="primary" onClick={() => void deploy()} disabled={!canEdit || !base} data-testid="deploy">
            Deploy{modifiedCount ? ` (${modifiedCount} modified)` : ''}
          </button>
          <span className="grow" />
          <button onClick={() => setPage('gateways')} data-testid="open-gateways">
            Gateways
          </button>
          <span className={`sf-badge status-${(gateway?.status ?? 'none').toLowerCase()}`} data-testid="gateway-status">
            gateway {connected ? (gateway?.status ?? '…') : 'offline'}
          </span>
          <span className="user">
            {session.username} ({session.role})
          </span>
          <button onClick={onSignOut}>Sign out</button>
        </header>
        {notice && (
          <div className={`notice ${notice.kind}`} role={notice.kind === 'error' ? 'alert' : 'status'} data-testid="notice">
            <span>{notice.text}</span>
            {notice.problems?.map((p, i) => (
              <div key={i} className="problem-line">
                <code>{p.pointer ?? '/'}</code> {p.message} {p.hint && <em>— {p.hint}</em>}
              </div>
            ))}
            {notice.text.includes('is at version') && base && (
              <button onClick={() => void loadFlow(base.id)}>Reload (drops your edits)</button>
            )}
            <button className="close" onClick={() => setNotice(null)} aria-label="dismiss">
              ×
            </button>
          </div>
        )}
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
              onNodeDragStart={record}
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
          <aside className="side">
            <nav className="tabs">
              {(['node', 'versions', 'problems'] as Panel[]).map((p) => (
                <button key={p} className={panel === p ? 'active' : ''} onClick={() => setPanel(p)} data-testid={`tab-${p}`}>
                  {p === 'problems' ? `problems (${problems.length})` : p}
                </button>
              ))}
            </nav>
            {panel === 'node' && base && (
              <div className="node-panel">
                <label>
                  Flow label
                  <input
                    value={label}
                    readOnly={!canEdit}
                    onChange={(e) => setLabel(e.target.value)}
                  />
                </label>
                {!one && <p className="hint">Select one node to configure it. {selected.length > 1 && `${selected.length} selected.`}</p>}
                {one && (
                  <div data-testid="node-config">
                    <h3>
                      {one.id} <small>{one.data.type}</small>
                    </h3>
                    <p className="hint">{oneType?.description}</p>
                    <label>
                      Name
                      <input
                        value={one.data.name}
                        readOnly={!canEdit}
                        data-testid="node-name"
                        onChange={(e) => updateNode(one.id, { name: e.target.value })}
                      />
                    </label>
                    {oneType && (
                      <ConfigForm
                        key={one.id}
                        nodeId={one.id}
                        schema={oneType.config_schema}
                        config={one.data.config}
                        readonly={!canEdit}
                        onChange={(config) => updateNode(one.id, { config })}
                      />
                    )}
                  </div>
                )}
              </div>
            )}
            {panel === 'versions' && base && (
              <VersionsPanel
                api={api}
                flowId={base.id}
                version={base.version}
                deployedVersion={flows.find((f) => f.id === base.id)?.deployed_version ?? null}
                canEdit={canEdit}
                onDiff={setDiff}
                onRestored={(flow) => {
                  void loadFlow(flow.id);
                  setNotice({ kind: 'info', text: `Restored as v${flow.version}; deploy to run it` });
                }}
              />
            )}
            {panel === 'problems' && (
              <ul className="problems" data-testid="problems">
                {problems.length === 0 && <li className="hint">No problems: the flow compiles.</li>}
                {problems.map((p, i) => (
                  <li key={i}>
                    <code>{p.pointer ?? '/'}</code>
                    {p.node_id && <strong> {p.node_id}</strong>} {p.message}
                    {p.hint && <em> — {p.hint}</em>}
                  </li>
                ))}
              </ul>
            )}
          </aside>
        </div>
        <DebugPanel
          records={records}
          taps={taps}
          ports={tapPorts}
          onTap={(node, port) => {
            if (!base) return;
            live.current?.tap(base.id, node, port);
            setTaps((t) => (t.includes(`${node}:${port}`) ? t : [...t, `${node}:${port}`]));
          }}
          onClear={() => setRecords([])}
        />
        {modal === 'new' && (
          <NewFlowDialog
            onCancel={() => setModal(null)}
            onCreate={async (id, label) => {
              try {
                const created = await api.create({ format: 'streamforge.flow/v1', id, label, version: 0, nodes: [], edges: [] });
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
      </div>
    </CanvasInfoContext.Provider>
  );
}

function NewFlowDialog(props: { onCancel: () => void; onCreate: (id: string, label: string) => Promise<void> }) {
  const [id, setId] = useState('');
  const [label, setLabel] = useState('');
  return (
    <div className="modal" role="dialog" data-testid="new-dialog">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void props.onCreate(id, label);
        }}
      >
        <h3>New flow</h3>
        <label>
          Id (letters, digits, _ and -)
          <input value={id} onChange={(e) => setId(e.target.value)} pattern="[A-Za-z][A-Za-z0-9_\-]{0,63}" required autoFocus data-testid="new-id" />
        </label>
        <label>
          Label
          <input value={label} onChange={(e) => setLabel(e.target.value)} />
        </label>
        <button type="submit" data-testid="new-create">Create</button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </form>
    </div>
  );
}

function ImportDialog(props: { onCancel: () => void; onImport: (text: string) => Promise<void> }) {
  const [text, setText] = useState('');
  const [error, setError] = useState<ApiError | null>(null);
  const submit = async () => {
    try {
      await props.onImport(text);
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, 'error', String(err)));
    }
  };
  return (
    <div className="modal" role="dialog" data-testid="import-dialog">
      <div>
        <h3>Import flow JSON</h3>
        <p className="hint">All or nothing: a document with any problem is not stored.</p>
        <input
          type="file"
          accept="application/json,.json"
          data-testid="import-file"
          onChange={(e) => void e.target.files?.[0]?.text().then(setText)}
        />
        <textarea value={text} onChange={(e) => setText(e.target.value)} rows={14} placeholder="…or paste it here" data-testid="import-text" />
        {error && (
          <div className="error" role="alert" data-testid="import-errors">
            {error.message}
            {error.problems.map((p, i) => (
              <div key={i} className="problem-line">
                <code>{p.pointer ?? '/'}</code> {p.message} {p.hint && <em>— {p.hint}</em>}
              </div>
            ))}
          </div>
        )}
        <button onClick={() => void submit()} disabled={!text} data-testid="import-submit">
          Import
        </button>
        <button onClick={props.onCancel}>Cancel</button>
      </div>
    </div>
  );
}
