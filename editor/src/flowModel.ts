/** The canvas model: flow document <-> React Flow nodes and edges, typed wiring rules, new ids. */
import type { Edge, Node } from '@xyflow/react';
import type { EdgeSpec, FlowDocument, NodeSpec, NodeType, PortSpec } from './types';

export interface NodeData extends Record<string, unknown> {
  type: string;
  name: string;
  config: Record<string, unknown>;
}

export type CanvasNode = Node<NodeData, 'sf'>;
export type CanvasEdge = Edge;

export interface Canvas {
  nodes: CanvasNode[];
  edges: CanvasEdge[];
}

export const edgeId = (edge: EdgeSpec): string => `${edge.from}->${edge.to}`;

export function toCanvas(doc: FlowDocument): Canvas {
  return {
    nodes: doc.nodes.map((node) => ({
      id: node.id,
      type: 'sf',
      position: { x: node.x, y: node.y },
      data: { type: node.type, name: node.name, config: node.config },
    })),
    edges: doc.edges.map((edge) => {
      const [source, sourceHandle] = edge.from.split(':');
      const [target, targetHandle] = edge.to.split(':');
      return { id: edgeId(edge), source, sourceHandle, target, targetHandle };
    }),
  };
}

export function toDocument(base: FlowDocument, canvas: Canvas): FlowDocument {
  const nodes: NodeSpec[] = canvas.nodes.map((node) => ({
    id: node.id,
    type: node.data.type,
    name: node.data.name,
    x: Math.round(node.position.x),
    y: Math.round(node.position.y),
    config: node.data.config,
  }));
  const edges: EdgeSpec[] = canvas.edges.map((edge) => ({
    from: `${edge.source}:${edge.sourceHandle}`,
    to: `${edge.target}:${edge.targetHandle}`,
  }));
  return { ...base, nodes, edges };
}

/** Why a wire may not be drawn, or null when it may: the same rule as the compiler's PortType.accepts. */
export function wireRefusal(
  types: Map<string, NodeType>,
  nodes: CanvasNode[],
  edges: CanvasEdge[],
  wire: { source: string; sourceHandle?: string | null; target: string; targetHandle?: string | null },
): string | null {
  const from = nodes.find((n) => n.id === wire.source);
  const to = nodes.find((n) => n.id === wire.target);
  if (!from || !to) return 'both ends must be nodes of this flow';
  if (from.id === to.id) return `${from.id} cannot be wired to itself`;
  const out = types.get(from.data.type)?.outputs.find((p) => p.name === wire.sourceHandle);
  const inp = types.get(to.data.type)?.inputs.find((p) => p.name === wire.targetHandle);
  if (!out || !inp) return 'wire an output port (right) to an input port (left)';
  if (!(out.type === inp.type || out.type === 'any' || inp.type === 'any')) {
    return `${from.id}:${out.name} sends ${out.type} records, but ${to.id}:${inp.name} takes ${inp.type}`;
  }
  const id = `${wire.source}:${wire.sourceHandle}->${wire.target}:${wire.targetHandle}`;
  if (edges.some((e) => e.id === id)) return 'these ports are already wired';
  return null;
}

/** A fresh id for a node of `type`: the type's name and the lowest free number. */
export function newNodeId(type: string, taken: Set<string>): string {
  const stem = /^[A-Za-z]/.test(type) ? type.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 56) : `n_${type}`;
  for (let n = 1; ; n += 1) {
    const id = `${stem}_${n}`;
    if (!taken.has(id)) return id;
  }
}

/** JSON with object keys sorted: the server stores documents with sorted keys. */
export const stable = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
      : v,
  );

export const portTitle = (port: PortSpec): string =>
  `${port.name} (${port.type})${port.description ? ` — ${port.description}` : ''}`;

/** Copies of `nodes` (and the wires among them) with fresh ids, shifted so they do not cover the originals. */
export function duplicate(clip: Canvas, taken: Set<string>, shift: number): Canvas {
  const ids = new Map<string, string>();
  const nodes = clip.nodes.map((node) => {
    const id = newNodeId(node.data.type, taken);
    taken.add(id);
    ids.set(node.id, id);
    return {
      ...node,
      id,
      selected: true,
      position: { x: node.position.x + shift, y: node.position.y + shift },
      data: structuredClone(node.data),
    };
  });
  const edges = clip.edges
    .filter((e) => ids.has(e.source) && ids.has(e.target))
    .map((e) => {
      const source = ids.get(e.source)!;
      const target = ids.get(e.target)!;
      return { ...e, source, target, id: `${source}:${e.sourceHandle}->${target}:${e.targetHandle}` };
    });
  return { nodes, edges };
}
