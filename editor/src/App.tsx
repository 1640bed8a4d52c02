/** The editor's root: sign-in, then the flow editor (its state lives in hooks, its parts in their own modules). */
import { ReactFlowProvider } from '@xyflow/react';
import { useCallback, useState } from 'react';
import { Editor } from './Editor';
import { Login } from './Login';
import type { Session } from './types';

const SESSION_KEY = 'streamforge.session';

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
