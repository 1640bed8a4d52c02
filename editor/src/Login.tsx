/** Sign-in: the editor is never open; every API call and the websocket carry the session token. */
import { useState, type FormEvent } from 'react';
import { ApiError, login } from './api';
import type { Session } from './types';

export function Login({ onSession, notice }: { onSession: (session: Session) => void; notice: string }) {
  const [username, setUsername] = useState('admin');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    try {
      onSession(await login(username, password));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  return (
    <form className="login" onSubmit={submit} data-testid="login">
      <h1>StreamForge</h1>
      {notice && (
        <p className="hint" role="status" data-testid="login-notice">
          {notice}
        </p>
      )}
      <label>
        User
        <input name="username" value={username} onChange={(e) => setUsername(e.target.value)} autoFocus />
      </label>
      <label>
        Password
        <input name="password" type="password" value={password} onChange={(e) => setPassword(e.target.value)} />
      </label>
      <button type="submit">Sign in</button>
      {error && <p className="error" role="alert">{error}</p>}
      <p className="hint">
        `streamforge up` prints the admin password on its first start; a lost one is reset with `streamforge user
        reset-password admin`.
      </p>
    </form>
  );
}
