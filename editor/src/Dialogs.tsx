/** The editor's dialogs: a new flow, an import, "discard unsaved changes?", and "are you sure?" before an action
 * that stops or removes something. */
import { useState, type ReactNode } from 'react';
import { ApiError } from './api';

export function NewFlowDialog(props: { onCancel: () => void; onCreate: (id: string, label: string) => Promise<void> }) {
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

export function ImportDialog(props: { onCancel: () => void; onImport: (text: string) => Promise<void> }) {
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

/** Asked before anything replaces a canvas with unsaved edits (another flow, new, import, restore). */
export function DiscardDialog(props: { flowId: string; onDiscard: () => void; onKeep: () => void }) {
  return (
    <div className="modal" role="alertdialog" data-testid="discard-dialog">
      <div>
        <h3>Discard unsaved changes?</h3>
        <p>
          Your edits to <strong>{props.flowId}</strong> are not saved. Save them first (Ctrl+S), or discard them.
        </p>
        <button onClick={props.onKeep} autoFocus data-testid="keep-editing">
          Keep editing
        </button>
        <button className="danger" onClick={props.onDiscard} data-testid="discard">
          Discard changes
        </button>
      </div>
    </div>
  );
}

/** Asked before an action that cannot be taken back by Undo: says what will happen, then does it or not. */
export function ConfirmDialog(props: {
  title: string;
  children: ReactNode;
  confirm: string;
  testId: string;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  return (
    <div className="modal" role="alertdialog" aria-label={props.title} data-testid={props.testId}>
      <div>
        <h3>{props.title}</h3>
        {props.children}
        <div className="buttons">
          <button onClick={props.onCancel} autoFocus data-testid="confirm-cancel">
            Cancel
          </button>
          <button className="danger" onClick={props.onConfirm} data-testid="confirm">
            {props.confirm}
          </button>
        </div>
      </div>
    </div>
  );
}
