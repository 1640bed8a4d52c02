/** The flow menu beside Deploy: deploy to another place, stop the flow everywhere, delete it. */
import { useEffect, useRef, useState } from 'react';

export interface FlowMenuItem {
  id: string; // data-testid `menu-{id}`
  label: string;
  title: string;
  disabled?: boolean;
  danger?: boolean;
  onClick: () => void;
}

export function FlowMenu({ items }: { items: FlowMenuItem[] }) {
  const [open, setOpen] = useState(false);
  const root = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!open) return;
    const away = (e: MouseEvent) => {
      if (!root.current?.contains(e.target as Node)) setOpen(false);
    };
    const escape = (e: KeyboardEvent) => {
      if (e.key === 'Escape') setOpen(false);
    };
    document.addEventListener('mousedown', away);
    document.addEventListener('keydown', escape);
    return () => {
      document.removeEventListener('mousedown', away);
      document.removeEventListener('keydown', escape);
    };
  }, [open]);
  return (
    <div className="menu" ref={root}>
      <button onClick={() => setOpen((o) => !o)} aria-haspopup="menu" aria-expanded={open} title="more for this flow"
              data-testid="flow-menu">
        ☰
      </button>
      {open && (
        <ul role="menu">
          {items.map((item) => (
            <li key={item.id} role="none">
              <button role="menuitem" className={item.danger ? 'danger-text' : ''} disabled={item.disabled}
                      title={item.title} data-testid={`menu-${item.id}`}
                      onClick={() => {
                        setOpen(false);
                        item.onClick();
                      }}>
                {item.label}
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
