/** The palette: node types grouped by category, searchable; drag one onto the canvas (or double-click it). */
import { useMemo, useState } from 'react';
import type { NodeType } from './types';

export const DRAG_MIME = 'application/x-streamforge-node-type';

export function Palette({ types, onAdd }: { types: NodeType[]; onAdd: (type: string) => void }) {
  const [query, setQuery] = useState('');
  const groups = useMemo(() => {
    const q = query.trim().toLowerCase();
    const byCategory = new Map<string, NodeType[]>();
    for (const t of types) {
      if (q && !`${t.type} ${t.category} ${t.description}`.toLowerCase().includes(q)) continue;
      byCategory.set(t.category, [...(byCategory.get(t.category) ?? []), t]);
    }
    return [...byCategory.entries()].sort(([a], [b]) => a.localeCompare(b));
  }, [types, query]);
  return (
    <aside className="palette" data-testid="palette">
      <input placeholder="Search nodes" value={query} onChange={(e) => setQuery(e.target.value)} data-testid="palette-search" />
      {groups.map(([category, members]) => (
        <section key={category}>
          <h3>{category}</h3>
          {members.map((t) => (
            <div
              key={t.type}
              className={`palette-item kind-${t.kind}`}
              draggable
              title={t.description}
              data-testid={`palette-${t.type}`}
              onDragStart={(e) => {
                e.dataTransfer.setData(DRAG_MIME, t.type);
                e.dataTransfer.effectAllowed = 'move';
              }}
              onDoubleClick={() => onAdd(t.type)}
            >
              <strong>{t.type}</strong>
              <small>{t.description}</small>
            </div>
          ))}
        </section>
      ))}
      {groups.length === 0 && <p className="hint">No node type matches “{query}”.</p>}
    </aside>
  );
}
