/** The editor's root: sign-in, the session kept fresh (refreshed before it ends), then the flow editor. */
import { ReactFlowProvider } from '@xyflow/react';
import { useCallback, useEffect, useRef, useState } from 'react';
import { logout, refreshSession } from './api';
import { Editor } from './Editor';
import { Login } from './Login';
import type { Session } from './types';

const SESSION_KEY = 'streamforge.session';
const REFRESH_BEFORE_MS = 10 * 60 * 1000; // refresh this long before the session ends
const EXPIRED = 'Your session ended (it expired, was revoked, or your user was disabled): sign in again.';

export function App() {
  const [session, setSession] = useState<Session | null>(() => {
    const saved = sessionStorage.getItem(SESSION_KEY);
    return saved ? (JSON.parse(saved) as Session) : null;
  });
  const [notice, setNotice] = useState('');
  const signIn = useCallback((s: Session | null) => {
    if (s) sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
    else sessionStorage.removeItem(SESSION_KEY);
    setSession(s);
  }, []);
  const signingOut = useRef(false); // until the next sign-in: a 401 from a poll racing our logout is no expiry
  const expired = useCallback(() => {
    if (signingOut.current) return;
    setNotice(EXPIRED);
    signIn(null);
  }, [signIn]);
  const signOut = useCallback(() => {
    // Revoked on the server first, so the token is dead once the sign-in form shows.
    signingOut.current = true;
    void (session ? logout(session.token) : Promise.resolve()).then(() => {
      setNotice('Signed out.');
      signIn(null);
    });
  }, [session, signIn]);

  useEffect(() => {
    if (!session?.expires_at) return;
    const wait = Math.max(5000, session.expires_at - Date.now() - REFRESH_BEFORE_MS);
    const timer = window.setTimeout(() => {
      refreshSession(session.token).then(signIn, expired);
    }, wait);
    return () => window.clearTimeout(timer);
  }, [session, signIn, expired]);

  if (!session)
    return (
      <Login
        notice={notice}
        onSession={(s) => {
          signingOut.current = false;
          setNotice('');
          signIn(s);
        }}
      />
    );
  return (
    <ReactFlowProvider>
      <Editor session={session} onSignOut={signOut} onExpired={expired} />
    </ReactFlowProvider>
  );
}
