/** Who may do what: every user's Account page (password, own tokens, sign out) and an Admin's Users page (users,
 * roles, disable, delete, everyone's tokens). A new token's secret is shown once, when it is made. */
import { useCallback, useState, type FormEvent } from 'react';
import type { Api } from './api';
import { PageFrame, errorText, usePolling, type PageMessage } from './PageFrame';
import type { Role, Session, TokenInfo, UserInfo } from './types';

const REFRESH_MS = 5000;
const ROLES: Role[] = ['viewer', 'operator', 'engineer', 'admin'];
const when = (iso: string | null): string => (iso ? iso.replace('T', ' ').replace('+00:00', ' UTC') : 'never');

type Act = (what: string, action: () => Promise<unknown>) => Promise<boolean>;

/** Run an action, say how it went on the page, then reload what the page shows. */
function useActions(reload: () => Promise<void>): [PageMessage, (m: PageMessage) => void, Act] {
  const [message, setMessage] = useState<PageMessage>(null);
  const act: Act = async (what, action) => {
    try {
      await action();
      setMessage({ kind: 'info', text: `${what}: done` });
      await reload();
      return true;
    } catch (err) {
      setMessage({ kind: 'error', text: `${what}: ${errorText(err)}` });
      return false;
    }
  };
  return [message, setMessage, act];
}

export function AccountPage(props: { api: Api; session: Session; onClose: () => void; onSignOut: () => void }) {
  const { api, session } = props;
  const [tokens, setTokens] = useState<TokenInfo[]>([]);
  const load = useCallback(async () => setTokens((await api.tokens()).filter((t) => t.username === session.username)), [api, session.username]);
  usePolling(load, REFRESH_MS);
  const [message, setMessage, act] = useActions(load);
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');

  const change = async (event: FormEvent) => {
    event.preventDefault();
    const done = await act('Change password', async () => {
      const answer = await api.changePassword(current, next);
      setMessage({ kind: 'info', text: `Password changed; ${answer.revoked_tokens} other session(s) and token(s) revoked` });
    });
    if (done) {
      setCurrent('');
      setNext('');
    }
  };
  return (
    <PageFrame title={`Account: ${session.username} (${session.role})`} testId="account-page" onClose={props.onClose}
               message={message} onDismiss={() => setMessage(null)}>
      <section>
        <h3>Password</h3>
        <form className="inline-form" onSubmit={(e) => void change(e)} data-testid="password-form">
          <input type="password" placeholder="current password" value={current} onChange={(e) => setCurrent(e.target.value)}
                 name="current-password" autoComplete="current-password" />
          <input type="password" placeholder="new password (12+ characters)" value={next} onChange={(e) => setNext(e.target.value)}
                 name="new-password" autoComplete="new-password" />
          <button type="submit" disabled={!current || next.length < 12}>Change password</button>
        </form>
        <p className="hint">Changing it signs out your other sessions and revokes your other tokens.</p>
        <button onClick={props.onSignOut} data-testid="sign-out">Log out</button>
      </section>
      <TokensSection api={api} tokens={tokens} act={act} showOwner={false} />
    </PageFrame>
  ); // prettier-ignore
}

export function UsersPage({ api, session, onClose }: { api: Api; session: Session; onClose: () => void }) {
  const [users, setUsers] = useState<UserInfo[]>([]);
  const [tokens, setTokens] = useState<TokenInfo[]>([]);
  const load = useCallback(async () => {
    const [u, t] = await Promise.all([api.users(), api.tokens()]);
    setUsers(u);
    setTokens(t);
  }, [api]);
  usePolling(load, REFRESH_MS);
  const [message, setMessage, act] = useActions(load);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState<Role>('viewer');

  const create = async (event: FormEvent) => {
    event.preventDefault();
    if (await act(`Create user ${username}`, () => api.createUser(username, password, role))) {
      setUsername('');
      setPassword('');
    }
  };
  return (
    <PageFrame title="Users and tokens" testId="users-page" onClose={onClose} message={message} onDismiss={() => setMessage(null)}>
      <section>
        <h3>New user</h3>
        <form className="inline-form" onSubmit={(e) => void create(e)} data-testid="new-user">
          <input placeholder="user name" value={username} onChange={(e) => setUsername(e.target.value)} name="new-username" />
          <input type="password" placeholder="password (12+ characters)" value={password}
                 onChange={(e) => setPassword(e.target.value)} name="new-user-password" autoComplete="new-password" />
          <select value={role} onChange={(e) => setRole(e.target.value as Role)} name="new-user-role">
            {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
          </select>
          <button type="submit" disabled={!username || password.length < 12}>Create user</button>
        </form>
        <p className="hint">Disabling or deleting a user ends their sessions and tokens at once. The last enabled admin
          can be neither demoted, disabled nor deleted; a lost admin password is reset on the control plane's host with
          `streamforge user reset-password admin`.</p>
      </section>
      <table className="gateways" data-testid="users">
        <thead>
          <tr><th>User</th><th>Role</th><th>State</th><th>Live tokens</th><th>Created</th><th /></tr>
        </thead>
        <tbody>
          {users.map((u) => (
            <tr key={u.username} data-testid={`user-${u.username}`}>
              <td>{u.username}{u.username === session.username && <small> (you)</small>}</td>
              <td>
                <select value={u.role} aria-label={`role of ${u.username}`}
                        onChange={(e) => void act(`${u.username} → ${e.target.value}`, () => api.updateUser(u.username, { role: e.target.value }))}>
                  {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
                </select>
              </td>
              <td>{u.disabled ? <span className="sf-badge status-failed">disabled</span> : 'enabled'}</td>
              <td>{u.live_tokens}</td>
              <td>{when(u.created_at)}</td>
              <td>
                <button onClick={() => void act(`${u.disabled ? 'Enable' : 'Disable'} ${u.username}`,
                                                () => api.updateUser(u.username, { disabled: !u.disabled }))}>
                  {u.disabled ? 'Enable' : 'Disable'}
                </button>
                <button className="danger" data-testid={`delete-${u.username}`}
                        onClick={() => window.confirm(`Delete user ${u.username} and all their tokens?`) &&
                                       void act(`Delete ${u.username}`, () => api.deleteUser(u.username))}>
                  Delete
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <TokensSection api={api} tokens={tokens} act={act} showOwner />
    </PageFrame>
  ); // prettier-ignore
}

/** Tokens (and sessions) with revoke buttons, and a form for a named token whose secret is shown once. */
function TokensSection(props: { api: Api; tokens: TokenInfo[]; act: Act; showOwner: boolean }) {
  const { api, act } = props;
  const [name, setName] = useState('');
  const [scope, setScope] = useState<'api' | 'mcp'>('api');
  const [days, setDays] = useState(90);
  const [issued, setIssued] = useState<{ name: string; token: string } | null>(null);

  const create = async (event: FormEvent) => {
    event.preventDefault();
    const done = await act(`Create token ${name}`, async () => {
      const made = await api.createToken(name, scope, days);
      setIssued({ name: made.name, token: made.token });
    });
    if (done) setName('');
  };
  return (
    <section>
      <h3>Tokens</h3>
      <form className="inline-form" onSubmit={(e) => void create(e)} data-testid="new-token">
        <input placeholder="token name, e.g. ci-script" value={name} onChange={(e) => setName(e.target.value)} name="token-name" />
        <select value={scope} onChange={(e) => setScope(e.target.value as 'api' | 'mcp')} name="token-scope"
                title="mcp: for an AI agent; works only at /mcp, where changes need a human's approval">
          <option value="api">api (REST)</option>
          <option value="mcp">mcp (agent, /mcp only)</option>
        </select>
        <label>days <input type="number" min={1} max={365} value={days} onChange={(e) => setDays(Number(e.target.value))}
                           name="token-days" /></label>
        <button type="submit" disabled={!name}>Create token</button>
      </form>
      {issued && (
        <div className="notice info" role="status" data-testid="issued-token">
          <span>Token <b>{issued.name}</b>, shown only now: copy it and keep it safe: <code>{issued.token}</code></span>
          <button className="close" onClick={() => setIssued(null)} aria-label="dismiss">×</button>
        </div>
      )}
      <table className="gateways" data-testid="tokens">
        <thead>
          <tr>{props.showOwner && <th>User</th>}<th>Name</th><th>Scope</th><th>Created</th><th>Expires</th><th>Last used</th><th /></tr>
        </thead>
        <tbody>
          {props.tokens.map((t) => (
            <tr key={t.id} data-testid={`token-${t.name}`}>
              {props.showOwner && <td>{t.username}</td>}
              <td>{t.name}</td>
              <td>{t.scope}</td>
              <td>{when(t.created_at)}</td>
              <td>{when(t.expires_at)}</td>
              <td>{when(t.last_used)}</td>
              <td>
                <button onClick={() => { setIssued(null); void act(`Revoke ${t.name}`, () => api.revokeToken(t.id)); }}
                        data-testid={`revoke-${t.name}`}>
                  Revoke
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  ); // prettier-ignore
}
